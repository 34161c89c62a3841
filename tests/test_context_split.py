"""The context split: the passages generator, what each model reads, kv_translate's reads, positions and
layout, and the rules validate holds."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentbridge.api.messages import KVPrefix
from latentbridge.bridge.generation import greedy_generate
from latentbridge.config.recipe import validate_recipe
from latentbridge.errors import ConfigError
from latentbridge.nn.rope import rope_tables, rotate, unrotate
from latentbridge.zoo import passages

from .helpers import make_experiment, recipe_dict

PASSAGES = ("task=passages", "task.n_facts=3", "translator=kv_translate", "injection=soft_plus_text")


# -- the generator ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_facts", [1, 4, None])
def test_no_entity_is_shared_between_splits_or_items(n_facts):
    """Every entity is fresh: used by one item only, and never by two splits (the models' public items
    included), whatever the number of facts."""
    owner: dict[str, tuple[str, str]] = {}
    for split, n in (("public", 300), ("train", 300), ("dev", 100), ("test", 100)):
        for row in passages.generate_split(split, 0, n=n, n_facts=n_facts):
            for name in row["entities"]:
                assert name.lower() not in owner, f"{name} in {row['id']} and {owner[name.lower()]}"
                owner[name.lower()] = (split, row["id"])
                assert passages.split_of(name) == split


def test_the_task_entities_and_the_facts_task_s_never_meet():
    from latentbridge.zoo import facts

    known = {e["name"].lower() for group in facts.entities(0).values() for e in group}
    rows = [r for split in ("train", "dev", "test") for r in passages.generate_split(split, 0, n=200)]
    assert not known & {n.lower() for r in rows for n in r["entities"]}


@settings(max_examples=25, deadline=None)
@given(n_facts=st.integers(1, passages.MAX_FACTS), seed=st.integers(0, 10_000))
def test_an_item_states_the_asked_fact_once_and_asks_about_it(n_facts, seed):
    import random

    rng = random.Random(seed)
    names = passages._Names("train", rng, set())
    item = passages.make_item(rng, names, n_facts)
    sentences = item["context"].split(". ")
    assert len(sentences) == n_facts
    value = item["answer"].rsplit("#### ", 1)[1]
    attribute = item["answer"].split(f" has {value} ")[1].split(".")[0]
    about = [s for s in sentences if s.startswith(f"The {attribute} of the ") and f" {item['entity']}: " in s + " "]
    assert len(about) == 1 and about[0].rstrip(".").endswith(f" {item['entity']}: {value}")
    assert item["entity"] in item["query"] and attribute in item["query"]
    assert item["question"] == f"{item['context']} {item['query']}"


def test_a_split_that_runs_out_of_fresh_names_refuses_rather_than_searching_for_ever():
    """Every entity is fresh, so a split has only so many names: the last free ones are drawn (each once),
    then a draw refuses (before, it searched for ever: 20,000 train items of 8 facts need more names than the
    train split has)."""
    import random

    class Bounded(random.Random):  # a draw that searched for ever fails the test instead of hanging it
        calls = 0

        def choice(self, seq):
            Bounded.calls += 1
            assert Bounded.calls < 2_000_000, "the draw searches for ever"  # (about 0.5 million when it works)
            return super().choice(seq)

    free = sorted(passages.names_in_split("test"))[:3]
    others = {next(iter(passages.names_in_split("dev"))), "not a name"}  # taken, but not the split's: no count
    names = passages._Names("test", Bounded(0), set(passages.names_in_split("test")) - set(free) | others)
    assert names.left == 3
    assert sorted(names.draw().lower() for _ in range(3)) == free
    with pytest.raises(passages.NamesExhausted, match="the test split has no fresh name left"):
        names.draw()


@pytest.mark.parametrize(("split", "n", "option"), [("train", 123, "task.n_train"), ("dev", 17, "eval.dev_n")])
def test_the_task_says_which_option_to_lower_when_names_run_out(random_pair, monkeypatch, split, n, option):
    from latentbridge.plugins.tasks import passages as task_module

    from latentbridge.errors import LatentBridgeError

    exp = make_experiment(random_pair, *PASSAGES)
    task = type(exp.task)(dataclasses.replace(exp.task.config, n_train=123))
    task.dev_size = 17

    def exhausted(*args, **kwargs):
        raise task_module.passages.NamesExhausted(f"passages: the {split} split has no fresh name left")

    monkeypatch.setattr(task_module.passages, "generate_split", exhausted)
    with pytest.raises(LatentBridgeError, match=rf"no fresh name left \({n} {split} items of 3 facts: lower {option} or"):
        task.load(split)


def test_splits_are_deterministic_and_seeded():
    assert passages.generate_split("test", 0) == passages.generate_split("test", 0)
    assert passages.generate_split("test", 0) != passages.generate_split("test", 1)


# -- what each model reads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reads", ["question", "context_and_question"])
@pytest.mark.parametrize("reverse", [False, True], ids=["llama->mistral", "mistral->llama"])
def test_the_target_reads_the_context_only_when_told(random_pair, reads, reverse):
    """Decoded from the ids each model reads (the llama side's byte-level tokenizer decodes every character):
    the source reads context and question, the target the question, and the context only when told."""
    exp = make_experiment(random_pair, *PASSAGES[:2], "translator=linear", f"task.target_reads={reads}",
                          reverse=reverse)
    bridge = exp.bridge
    examples = exp.task.examples("test")[:4]
    prompts = [exp.task.prompt(e) for e in examples]
    for example, prompt, source_row in zip(examples, prompts, bridge.source_rows(prompts), strict=True):
        if not reverse:
            source_text = bridge.source.tokenizer.decode(source_row)
            assert example.context in source_text and example.question in source_text
        else:
            text = bridge.target_encoder.target_text(prompt, with_answer=False)
            target_text = bridge.target.tokenizer.decode(list(text.prefix) + list(text.prompt))
            assert example.question in target_text
            assert (example.context in target_text) == (reads == "context_and_question")
        # the skyline always hands the target the source's prompt
        skyline = exp.task.source_prompt(example)
        assert example.context in skyline.text and skyline.text == prompt.for_source.text
        assert (example.context in prompt.text) == (reads == "context_and_question")


def test_systems_read_their_side_of_the_split(random_pair, tmp_path, monkeypatch):
    """Through the harness: the source and the skyline read the context, the target does not (their
    cached inputs differ exactly there)."""
    from latentbridge.plugins.systems.text import Skyline, Source, Target

    from latentbridge.eval.harness import EvalSettings, Evaluator

    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    exp = make_experiment(random_pair, *PASSAGES[:2], "translator=linear")
    ev = Evaluator(exp.bridge, exp.task, EvalSettings(n=3, batch_size=3, max_new_tokens=2, stop=[], systems=["target"]),
                   tmp_path)
    for example, source, target, skyline in zip(ev.items, Source().prompts(ev), Target().prompts(ev),
                                                Skyline.prompts(ev), strict=True):
        assert example.context in source.text and example.context in skyline.text
        assert example.context not in target.text and example.question in target.text


# -- validate ----------------------------------------------------------------------------------------------


def test_validate_refuses_c2c_without_the_context_and_kv_translate_without_a_split(random_pair):
    data = recipe_dict(random_pair, *PASSAGES[:2], "translator=c2c", "injection=fused_prompt")
    with pytest.raises(ConfigError, match="c2c.*fuses the target's own positions"):
        validate_recipe(data)
    data["task"]["target_reads"] = "context_and_question"
    validate_recipe(data)  # the target reads the context: c2c can fuse it
    data = recipe_dict(random_pair, "translator=kv_translate")
    with pytest.raises(ConfigError, match="kv_translate.*has no context"):
        validate_recipe(data)
    data = recipe_dict(random_pair, *PASSAGES, "task.target_reads=context_and_question")
    with pytest.raises(ConfigError, match="lets the target read it"):
        validate_recipe(data)


# -- kv_translate ------------------------------------------------------------------------------------------


def _states(exp, n=4):
    examples = exp.task.examples("test")[:n]
    prompts = [exp.task.prompt(e) for e in examples]
    return examples, prompts, exp.bridge.source_states(prompts, examples)


@pytest.mark.parametrize("reverse", [False, True], ids=["llama->mistral", "mistral->llama"])
def test_kv_translate_reads_the_context_and_nothing_else(random_pair, reverse, monkeypatch):
    """The tokens it reads are the context's, whole; noise everywhere else in the source's cache (the source
    made to read the question too) changes nothing, noise inside the context changes the message."""
    exp = make_experiment(random_pair, *PASSAGES, reverse=reverse)
    monkeypatch.setattr(type(exp.translator), "reads_context_only", False)  # the source reads every token
    examples, prompts, states = _states(exp)
    rows = exp.bridge.source_rows(prompts)
    width = states.mask.shape[1]
    tok = exp.bridge.source.tokenizer  # (the mistral side decodes a character it lacks as <unk>)
    for example, row, (start, end) in zip(examples, rows, states.context, strict=True):
        pad = width - len(row)
        want = tok.decode(tok(example.context, add_special_tokens=False)["input_ids"]).strip()
        assert tok.decode(row[start - pad : end - pad]).strip() == want
    with torch.no_grad():
        message = exp.translator.message(states)
    assert message.ntokens() == [end - start for start, end in states.context]
    outside = torch.ones_like(states.mask, dtype=torch.bool)
    for row, (start, end) in enumerate(states.context):
        outside[row, start:end] = False
    generator = torch.Generator().manual_seed(0)

    def noisy(where: torch.Tensor):
        kv = []
        for k, v in states.kv:
            noise = [torch.randn(t.shape, generator=generator) * 10 for t in (k, v)]
            at = where[:, None, :, None]
            kv.append((torch.where(at, noise[0], k), torch.where(at, noise[1], v)))
        return dataclasses.replace(states, kv=kv)

    with torch.no_grad():
        same = exp.translator.message(noisy(outside))
        changed = exp.translator.message(noisy(~outside & states.mask.bool()))
    for a, b in zip(message.keys + message.values, same.keys + same.values, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(message.keys, changed.keys, strict=True))


@pytest.mark.parametrize(("reverse", "shots"), [(False, 0), (True, 0), (False, 1)],
                         ids=["llama->mistral", "mistral->llama", "one shot"])
def test_the_source_stops_after_the_context_and_the_message_is_the_same(random_pair, reverse, shots, monkeypatch):
    """kv_translate reads the source's cache at the context only, so the source reads each row up to the
    context's last token: the question is never run, and the message equals the one from every token read
    (with a shot, through the shared header's kept cache). A cut one token early (or late) changes the
    message or its length; no cut leaves the question read."""
    import latentbridge.bridge.core as core
    from latentbridge.bridge.prefix import cache_pass

    exp = make_experiment(random_pair, *PASSAGES, f"task.shots={shots}", reverse=reverse)
    kept = []  # with a shot, the rows share a header long enough to be run once and kept (cache_pass)
    monkeypatch.setattr(core, "cache_pass", lambda *a, **k: kept.append(1) or cache_pass(*a, **k))
    examples, prompts, cut = _states(exp, 6)
    assert bool(kept) == bool(shots)
    monkeypatch.setattr(type(exp.translator), "reads_context_only", False)
    _, _, whole = _states(exp, 6)
    rows = exp.bridge.source_rows(prompts)
    real = cut.mask.sum(1).tolist()
    assert len({end - start for start, end in cut.context}) > 1  # contexts of different lengths in one batch
    for row, n, (start, end), (w_start, w_end) in zip(rows, real, cut.context, whole.context, strict=True):
        assert end == cut.mask.shape[1]  # each row's last token read is its context's last
        assert end - start == w_end - w_start
        assert n < len(row)  # the question's tokens were not read
        assert len(row) - n == whole.mask.shape[1] - w_end  # exactly those after the context
    assert [len(o) for o in cut.offsets] == real
    with torch.no_grad():
        a, b = exp.translator.message(cut), exp.translator.message(whole)
    assert a.ntokens() == b.ntokens()
    for x, y in zip(a.keys + a.values, b.keys + b.values, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_no_cut_where_later_tokens_change_the_cache(random_pair, monkeypatch):
    """Where cut_is_exact says no (bidirectional attention, rotary tables that follow the longest position),
    the source reads every token, as before."""
    import latentbridge.bridge.core as core

    exp = make_experiment(random_pair, *PASSAGES)
    monkeypatch.setattr(core, "cut_is_exact", lambda model: False)
    examples, prompts, states = _states(exp)
    assert [int(n) for n in states.mask.sum(1)] == [len(r) for r in exp.bridge.source_rows(prompts)]
    assert all(end < states.mask.shape[1] for _, end in states.context)


def test_cut_is_exact_only_for_causal_models_with_fixed_rotary_tables():
    from transformers import Gemma3TextConfig, LlamaConfig

    from latentbridge.bridge.context import cut_is_exact

    def model(config):
        return type("M", (), {"config": config})()

    assert cut_is_exact(model(LlamaConfig()))
    for parameters in ({"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4},
                       {"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "longrope"}}):
        config = LlamaConfig()
        config.rope_parameters = parameters
        assert not cut_is_exact(model(config))
    gemma = Gemma3TextConfig()
    assert cut_is_exact(model(gemma))
    gemma.use_bidirectional_attention = True
    assert not cut_is_exact(model(gemma))

    class Flagged(LlamaConfig):  # Gemma-4's config: the flag is a string ('vision': images only, text causal)
        use_bidirectional_attention = None

    flagged = Flagged()
    for flag, exact in (("vision", True), ("all", False)):
        object.__setattr__(flagged, "use_bidirectional_attention", flag)
        assert cut_is_exact(model(flagged)) is exact
    causal = LlamaConfig()
    causal.is_causal = False
    assert not cut_is_exact(model(causal))


def test_cut_after_context_keeps_a_row_without_a_context_and_refuses_misaligned_spans():
    from latentbridge.api.task import Prompt
    from latentbridge.bridge.context import cut_after_context
    from latentbridge.errors import LatentBridgeError

    with_context = Prompt(header="", question="ab cd ef", cue="", answer="", context_span=(0, 5))
    without = Prompt(header="", question="ab cd ef", cue="", answer="")
    spans = [(0, 0), (0, 2), (2, 5), (5, 8)]  # a special token, then "ab", " cd", " ef"
    assert cut_after_context([[1, 2, 3, 4]] * 2, [with_context, without], [spans] * 2) == [[1, 2, 3], [1, 2, 3, 4]]
    straddling = Prompt(header="", question="ab cd ef", cue="", answer="", context_span=(0, 4))  # ends inside " cd"
    assert cut_after_context([[1, 2, 3, 4]], [straddling], [spans]) == [[1, 2, 3]]
    with pytest.raises(LatentBridgeError, match="3 token spans for a row of 4"):
        cut_after_context([[1, 2, 3, 4]], [with_context], [spans[:3]])


def test_rope_is_taken_off_and_put_back_as_the_model_rotates(random_pair):
    """A key rotated by the model's own code at position p, un-rotated there and rotated at q, is the key
    the model's code rotates at q."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    exp = make_experiment(random_pair, *PASSAGES)
    model = exp.bridge.target.model
    x = torch.randn(2, 2, 5, model.config.head_dim if hasattr(model.config, "head_dim") and model.config.head_dim
                    else model.config.hidden_size // model.config.num_attention_heads)
    p = torch.tensor([[0, 3, 4, 9, 17], [2, 2, 5, 6, 7]])
    q = p + torch.tensor([[5], [11]])
    cos_p, sin_p = rope_tables(model, 0, p, x)
    cos_q, sin_q = rope_tables(model, 0, q, x)
    at_p, _ = apply_rotary_pos_emb(x, x, cos_p, sin_p)
    at_q, _ = apply_rotary_pos_emb(x, x, cos_q, sin_q)
    torch.testing.assert_close(rotate(x, cos_p, sin_p), at_p)
    torch.testing.assert_close(unrotate(at_p, cos_p, sin_p), x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rotate(unrotate(at_p, cos_p, sin_p), cos_q, sin_q), at_q, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(at_p, at_q)  # the positions differ: a test that could fail


def test_identity_translation_of_the_target_s_own_context_is_reading_it(random_pair):
    """Source = target, every map the identity, no rescaling, and a template where the source's context
    starts right after BOS: the target reading [bos][translated context][question] is the target reading
    [bos][context][question] as text, on a left-padded batch of contexts of different lengths (keys
    un-rotated and re-rotated at the right positions, padding never counted)."""
    exp = make_experiment(random_pair, *PASSAGES, "models.source=" + str(random_pair["llama"]),
                          "models.target=" + str(random_pair["llama"]), "translator.rescale=false",
                          'task.question_template="{question}\\n"', 'task.context_template="{context}\\n{question}"')
    translator, bridge = exp.translator, exp.bridge
    with torch.no_grad():
        for layer_map in translator.maps:
            layer_map.weight.copy_(torch.eye(layer_map.weight.shape[0]))
            layer_map.bias.zero_()
    examples = exp.task.examples("test")[:4]
    prompts = [exp.task.prompt(e) for e in examples]
    assert len({len(e.context) for e in examples}) > 1
    enc = bridge.target_encoder
    with torch.no_grad():
        message = bridge.message(prompts, examples=examples)
        got = bridge.target.model(**bridge.bridged_inputs(message, prompts, with_answer=True).model_kwargs()).logits
        rows = []
        for e, p in zip(examples, prompts, strict=True):
            text = enc.target_text(p)
            rows.append(list(enc.prefix) + enc.ids(e.context) + list(text.prompt) + list(text.answer))
        want = bridge.target.model(**bridge.text_inputs(bridge.target, rows).model_kwargs()).logits
    for r, (e, p) in enumerate(zip(examples, prompts, strict=True)):
        assert message.ntokens()[r] == len(enc.ids(e.context))  # the "\n" is the template's, not read
        text = enc.target_text(p)
        n = len(text.prompt) + len(text.answer)
        torch.testing.assert_close(got[r, -n:], want[r, -n:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reverse", [False, True], ids=["llama->mistral", "mistral->llama"])
def test_kv_translate_train_layout_is_its_generation_layout(random_pair, reverse):
    """The logits before the first answer token in training are the first generated token's, on a
    left-padded batch of contexts of different lengths, and a row alone reads what it reads in the batch."""
    from .test_messages import train

    exp = make_experiment(random_pair, *PASSAGES, reverse=reverse)
    train(exp)
    bridge = exp.bridge
    examples = exp.task.examples("test")[:5]
    prompts = [exp.task.prompt(e) for e in examples]
    model = bridge.target.model
    with torch.no_grad():
        message = bridge.message(prompts, examples=examples)
        assert len(set(message.ntokens())) > 1  # rows of different lengths: padding inside the block
        train_inputs = bridge.bridged_inputs(message, prompts, with_answer=True)
        gen_inputs = bridge.bridged_inputs(message, prompts, with_answer=False)
        teacher = model(**train_inputs.model_kwargs()).logits
        first = model(**gen_inputs.model_kwargs()).logits[:, -1]
        alone = [model(**bridge.bridged_inputs(bridge.message([p], examples=[e]), [p], with_answer=False)
                       .model_kwargs()).logits[0, -1] for p, e in zip(prompts, examples, strict=True)]
    width = teacher.shape[1]
    for r, prompt in enumerate(prompts):
        answer = bridge.target_encoder.target_text(prompt).answer
        torch.testing.assert_close(teacher[r, width - len(answer) - 1], first[r], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(alone[r], first[r], rtol=1e-4, atol=1e-4)
    generated = greedy_generate(model, bridge.target.tokenizer, gen_inputs, max_new_tokens=2, eos_ids=set())
    for r, out in enumerate(generated):
        answer = bridge.target_encoder.target_text(prompts[r]).answer
        assert out.token_ids[0] == int(teacher[r, width - len(answer) - 1].argmax())


def test_layer_maps():
    from latentbridge.plugins.translators.kv_translate import layer_map

    assert layer_map("proportional", 4, 3) == [0, 2, 3]  # round(l * 3 / 2): 0, 1.5 -> 2, 3
    assert layer_map("proportional", 2, 3) == [0, 0, 1]  # 0, 0.5 -> 0 (banker's rounding), 1
    assert layer_map("last_aligned", 4, 3) == [1, 2, 3]
    assert layer_map("last_aligned", 2, 3) == [0, 0, 1]  # clamped below zero: every target layer reads one
    assert layer_map("proportional", 5, 1) == [4]


def test_kv_translate_message_bytes_count_the_context_s_positions(random_pair):
    exp = make_experiment(random_pair, *PASSAGES)
    _, _, states = _states(exp)
    with torch.no_grad():
        message = exp.translator.message(states)
    assert isinstance(message, KVPrefix) and not message.rotated
    c = exp.translator.config
    per_position = c.target_layers * 2 * c.target_kv_heads * c.target_head_dim * 4  # fp32
    assert message.nbytes() == [n * per_position for n in message.ntokens()]


@pytest.mark.parametrize("family", ["gemma3_text", "mistral"])
def test_a_sliding_window_source_keeps_every_position_for_kv_translate(random_pair, families, family):
    """A sliding-window source (window 16 here, contexts far longer) hands over its keys and values at every
    position it read, so the whole context is translated (a cache built from the config keeps window - 1)."""
    exp = make_experiment(random_pair, *PASSAGES, f"models.source={families.folders[family]}")
    examples, prompts, states = _states(exp, 3)
    assert states.mask.shape[1] > 16
    assert all(k.shape[2] == states.mask.shape[1] for k, _ in states.kv)
    with torch.no_grad():
        message = exp.translator.message(states)
    assert message.ntokens() == [end - start for start, end in states.context]
    assert min(message.ntokens()) > 16


def test_the_message_does_not_depend_on_where_the_source_s_positions_start(random_pair, monkeypatch):
    """Rotary keys depend on absolute positions, the source's states only on relative ones: a source run with
    every position shifted gives other cached keys but, un-rotated, the same message. A translator that read
    the rotated keys as they are (or un-rotated them at the wrong positions) would change."""
    import latentbridge.bridge.core as core

    exp = make_experiment(random_pair, *PASSAGES)
    examples = exp.task.examples("test")[:3]
    prompts = [exp.task.prompt(e) for e in examples]
    with torch.no_grad():
        plain = exp.bridge.source_states(prompts, examples)
        message = exp.translator.message(plain)
        original = core.positions_from_mask
        monkeypatch.setattr(core, "positions_from_mask", lambda mask: original(mask) + 7)
        shifted = exp.bridge.source_states(prompts, examples)
        moved = exp.translator.message(shifted)
    assert (shifted.positions == plain.positions + 7).all()
    assert any((a - b).abs().max() > 1e-3 for (a, _), (b, _) in zip(shifted.kv, plain.kv, strict=True))
    for a, b in zip(message.keys + message.values, moved.keys + moved.values, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_rope_with_attention_scaling_moves_keys_like_the_model(random_pair):
    """YaRN's tables carry an attention scale (cos² + sin² = s²): a key the model rotated at p, un-rotated and
    rotated at q, is the key the model writes at q, the scale neither lost nor applied twice."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=64,
                         rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                          "original_max_position_embeddings": 16})
    rotary = LlamaRotaryEmbedding(config)
    x = torch.randn(1, 2, 4, 16)
    p, q = torch.tensor([[0, 5, 9, 30]]), torch.tensor([[3, 11, 12, 50]])
    (cos_p, sin_p), (cos_q, sin_q) = rotary(x, p), rotary(x, q)
    assert not torch.allclose(cos_p * cos_p + sin_p * sin_p, torch.ones_like(cos_p))  # the scale is there
    at_p, _ = apply_rotary_pos_emb(x, x, cos_p, sin_p)
    at_q, _ = apply_rotary_pos_emb(x, x, cos_q, sin_q)
    torch.testing.assert_close(rotate(unrotate(at_p, cos_p, sin_p), cos_q, sin_q), at_q, rtol=1e-5, atol=1e-5)


def test_an_empty_context_is_a_message_of_no_positions(random_pair):
    """The null control's source reads no question and no context: the message has no position, weighs
    nothing, and the target still reads [bos][question]."""
    exp = make_experiment(random_pair, *PASSAGES, "task.shots=1")
    examples = exp.task.examples("test")[:3]
    prompts = [exp.task.prompt(e).without_question() for e in examples]
    with torch.no_grad():
        states = exp.bridge.source_states(prompts, None)
        assert states.context == [(states.mask.shape[1],) * 2] * 3  # the exemplar's context is not the item's
        message = exp.translator.message(states)
        assert message.ntokens() == [0, 0, 0] and message.nbytes() == [0, 0, 0]
        inputs = exp.bridge.bridged_inputs(message, [exp.task.prompt(e) for e in examples], with_answer=False)
        assert exp.bridge.target.model(**inputs.model_kwargs()).logits.isfinite().all()


def test_kv_translate_refuses_a_model_without_rotary_positions(random_pair, families):
    data = recipe_dict(random_pair, *PASSAGES)
    data["models"]["source"] = str(families.folders["gpt2"])
    from latentbridge.bridge.facts import check_against_models

    with pytest.raises(ConfigError, match="kv_translate moves keys between rotary positions"):
        check_against_models(validate_recipe(data))


@pytest.mark.parametrize("reverse", [False, True], ids=["llama->mistral", "mistral->llama"])
def test_the_skyline_objective_pulls_the_bridged_target_to_the_target_reading_the_context(random_pair, reverse):
    """The teacher reads the context (decoded from its ids), the student the translated context; the loss is
    the per-layer normalised squared error of the two passes' hidden states at the positions predicting the
    answer, computed here from two passes of our own, and its gradient reaches the translator."""
    from latentbridge.api.segments import Text
    from latentbridge.bridge.layout import assemble

    from .test_objectives import context

    exp = make_experiment(random_pair, *PASSAGES, "objectives={}", "objectives.skyline.weight=1.0",
                          "train.batch_size=4", reverse=reverse)
    examples = exp.task.examples("train")[:4]
    ctx = context(exp, examples)
    bridge, enc = exp.bridge, exp.bridge.target_encoder
    teacher = ctx.get("skyline_inputs")
    rows = []
    for row, (example, prompt) in enumerate(zip(examples, ctx.prompts, strict=True)):
        text = enc.target_text(prompt.for_source)
        rows.append([Text(text.prefix), Text(text.prompt), Text(text.answer, supervised=True)])
        # (one side's tokenizer lacks some capitals: compare the words it spells)
        words = [w for w in example.context.split() if w.isalpha() and w.islower()]
        decoded = bridge.target.tokenizer.decode(list(text.prompt))
        assert words and all(f" {w} " in decoded for w in words)
        own = bridge.target.tokenizer.decode(list(ctx.texts[row].prompt))
        unasked = [w for w in words if w not in example.question]
        assert unasked and not any(f" {w} " in own for w in unasked)
    # what the objective's teacher reads is exactly those rows: prefix, the source's prompt (with the context)
    read = assemble(rows, None, bridge.target.embed, bridge.target.pad_id)
    assert torch.equal(teacher.inputs_embeds, read.inputs_embeds) and torch.equal(teacher.labels, read.labels)
    assert torch.equal(teacher.attention_mask, read.attention_mask)
    loss = exp.objectives["skyline"](ctx)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in exp.translator.parameters())

    with torch.no_grad():  # by hand: both passes, every layer, right-aligned answers
        student = ctx.inputs.forward(bridge.target.model, output_hidden_states=True).hidden_states[1:]
        teacher_states = teacher.forward(bridge.target.model, output_hidden_states=True).hidden_states[1:]
    s_labels, t_labels = ctx.inputs.labels, teacher.labels
    ratios = []
    for s_layer, t_layer in zip(student, teacher_states, strict=True):
        error = scale = count = 0.0
        for r in range(len(examples)):
            s_cols = (s_labels[r] != -100).nonzero().flatten().tolist()
            t_cols = (t_labels[r] != -100).nonzero().flatten().tolist()
            assert s_labels[r, s_cols].tolist() == t_labels[r, t_cols].tolist()
            for js, jt in zip(s_cols, t_cols, strict=True):
                s, t = s_layer[r, js - 1], t_layer[r, jt - 1]  # the state predicting the answer token
                error += float(((s - t) ** 2).mean())
                scale += float((t**2).mean())
                count += 1
        ratios.append(error / scale)
    assert float(loss.detach()) == pytest.approx(sum(ratios) / len(ratios), rel=1e-4)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4), window=st.integers(1, 4))
def test_a_window_reads_each_position_s_predecessors_in_its_own_row(lengths, window):
    """Left-padded rows: block s of position j is the row's position j - s when that is part of the row's
    context, zeros otherwise (before the context's first position: never the padding's values)."""
    from latentbridge.plugins.translators.kv_translate import with_window

    n, d = max(lengths), 2
    x = torch.full((len(lengths), n, d), -1.0)  # padding that must never be read
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, n - length :] = 1
        x[row, n - length :] = torch.arange(1, length * d + 1, dtype=torch.float).view(length, d) + 100 * row
    out = with_window(x, mask, window)
    assert out.shape == (len(lengths), n, window * d)
    for row, length in enumerate(lengths):
        for j in range(n - length, n):
            for s in range(window):
                block = out[row, j, s * d : (s + 1) * d]
                want = x[row, j - s] if j - s >= n - length else torch.zeros(d)
                assert torch.equal(block, want)
