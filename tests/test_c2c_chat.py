"""c2c under chat templates, as the C2C authors align a templated conversation (``chat_alignment: sections``):
each model reads its own template, the sharer the receiver's message tokens re-encoded, template sections
padded to the longer of the two in positions, only message tokens fused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentbridge.bridge.retokenize import align_sections, aligned_positions, runs

from .c2c_sections_reference import PAD, align_chat
from .c2c_sections_reference import sections as sections_of
from .test_chat_template import with_chat_templates


@pytest.fixture
def chat_pair(random_pair, tmp_path):
    return with_chat_templates(random_pair, tmp_path)


@st.composite
def two_rows(draw):
    """A receiver row and a sharer row with as many message sections, templates of any lengths (the outer ones
    empty on both sides or on neither, as the authors' alignment needs)."""
    m = draw(st.integers(1, 3))
    outer = [draw(st.booleans()), draw(st.booleans())]

    def row(offset):
        ids, flags = [], []
        for i in range(m + 1):
            empty = (i == 0 and not outer[0]) or (i == m and not outer[1])
            n = 0 if empty else draw(st.integers(1, 5))
            ids += [offset + len(ids) + j for j in range(n)]
            flags += [False] * n
            if i < m:
                k = draw(st.integers(1, 4))
                ids += [offset + len(ids) + j for j in range(k)]
                flags += [True] * k
        return ids, flags

    return (*row(100), *row(500))


@settings(max_examples=200, deadline=None)
@given(two_rows())
def test_sections_agree_with_the_authors_alignment(rows):
    receiver_ids, receiver_flags, sharer_ids, sharer_flags = rows
    reencode = lambda ids: [i + 10_000 for i in ids]  # noqa: E731  (one sharer id per receiver id)
    r_pad, s_pad, message = align_chat(receiver_ids, receiver_flags, sharer_ids, sharer_flags, reencode)
    got = align_sections(receiver_ids, receiver_flags, sharer_ids, sharer_flags, reencode)
    # the sharer's row: the authors' without its pads, at the positions their padded row gives it
    assert got.ids == [t for t in s_pad if t != PAD]
    assert got.positions == [i for i, t in enumerate(s_pad) if t != PAD]
    # the receiver's tokens at the positions of the authors' padded receiver row, the response after it all
    positions, end = aligned_positions(receiver_flags, got.template)
    assert positions == [i for i, t in enumerate(r_pad) if t != PAD] and end == len(r_pad)
    # a message token and its re-encoding share a position; template tokens are never paired
    slots_at = [got.positions[s] for s in got.message_slots]
    assert slots_at == [positions[r] for r in got.received]
    assert [got.ids[s] for s in got.message_slots] == [receiver_ids[r] + 10_000 for r in got.received]
    assert sum(message) == len(got.message_slots) == sum(receiver_flags)


def test_runs_split_a_row_into_template_and_message_sections():
    assert runs([False, False, True, True, False, True]) == ([2, 1, 0], [2, 1])
    assert runs([True, False]) == ([0, 1], [1])
    assert runs([]) == ([0], [])


def test_rows_with_other_message_sections_are_one_clear_error():
    from latentbridge.errors import LatentBridgeError

    with pytest.raises(LatentBridgeError, match="into 1 message sections, the sharer's into 2"):
        align_sections([1, 2, 3], [False, True, False], [4, 5, 6, 7], [True, False, True, False], lambda i: i)


def _fused_keys(exp, prompts):
    """Each layer's keys of the target's prompt cache as the c2c layout fuses them (``b heads t d``)."""
    import torch

    with torch.no_grad():
        inputs = exp.bridge.bridged_inputs(exp.bridge.message(prompts), prompts, with_answer=False)
    cache = next(iter(inputs.cache().values()))
    return [layer.keys.clone() for layer in cache.layers]


def test_the_sharer_reads_its_own_template_and_only_message_tokens_are_fused(families):
    """qwen3 -> gemma2 through their chat templates (ChatML and Gemma's, of other lengths): the sharer's row
    is its own template around the receiver's message tokens re-encoded; in the fused cache the template
    tokens keep the target's own keys and the message tokens change."""
    import torch

    from latentbridge.bridge.retokenize import retokenize

    from .test_kv_conformance import experiment_for, prompts_of

    exp = experiment_for(families, "gemma2", "target", "c2c_chat", "float32")
    bridge = exp.bridge
    prompts = prompts_of(exp, 2)
    states = bridge.source_states(prompts)
    gaps = 0
    for prompt, sections in zip(prompts, states.sections, strict=True):
        own, own_flags = bridge.source_encoder.prompt_ids(prompt), bridge.source_encoder.message_flags(prompt)
        slots = set(sections.message_slots)
        assert [t for i, t in enumerate(sections.ids) if i not in slots] == [t for t, f in zip(own, own_flags, strict=True) if not f]
        ids, flags = bridge.target_encoder.prompt_ids(prompt), bridge.target_encoder.message_flags(prompt)
        assert sum(flags) > 0 and not all(flags)
        received = [t for t, f in zip(ids, flags, strict=True) if f]
        assert [sections.ids[s] for s in sections.message_slots] == retokenize(
            bridge.target.tokenizer, bridge.source.tokenizer, received)
        positions, _ = aligned_positions(flags, sections.template)
        gaps += positions[-1] + 1 - len(positions)
    assert gaps > 0  # the two templates differ in length: the padding shows in the positions
    fused = _fused_keys(exp, prompts)
    saved = {k: v.clone() for k, v in exp.translator.state_dict().items()}
    try:
        with torch.no_grad():
            for fuser in exp.translator.fusers.values():
                for part in ("key", "value"):
                    fuser.part(part, "proj_out").weight.zero_()
                    fuser.part(part, "proj_out").bias.zero_()
        own = _fused_keys(exp, prompts)
    finally:
        exp.translator.load_state_dict(saved)
    width = own[0].shape[2]
    for r, prompt in enumerate(prompts):
        flags = bridge.target_encoder.message_flags(prompt)
        # the cache ends with the user's message: the last section (the template's closing, the cue) is the input
        runs_of = sections_of(flags)
        cut = max(end for is_message, _, end in runs_of[:-1] if is_message)
        assert not runs_of[-1][0] or runs_of[-2][0] is False  # a cue after the closing: not fused
        columns = range(width - cut, width)
        changed = [bool((fused[-1][r, :, c] - own[-1][r, :, c]).abs().max() > 1e-6) for c in columns]
        assert changed == flags[:cut] and any(changed)


def test_the_controls_read_another_prompts_sections(families):
    """shuffled and null: the source read another prompt, whose message tokens the receiver's spread over; the
    receiver keeps its own positions (its template against the sharer's)."""
    import torch

    from .test_kv_conformance import experiment_for, prompts_of

    exp = experiment_for(families, "gemma2", "target", "c2c_chat", "float32")
    bridge = exp.bridge
    prompts = prompts_of(exp, 3)
    with torch.no_grad():
        message = bridge.message(prompts[1:] + prompts[:1])  # each row: another item's source states
        inputs = bridge.bridged_inputs(message, prompts, with_answer=True)
        assert torch.isfinite(inputs.forward(bridge.target.model).logits).all()
        alone = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=True)
    torch.testing.assert_close(inputs.position_ids, alone.position_ids)  # the receiver's own positions


def test_include_response_with_chat_sections_is_refused_by_validate(chat_pair, tmp_path):
    import json

    from typer.testing import CliRunner

    from latentbridge.cli import app

    from .helpers import recipe_dict

    data = recipe_dict(chat_pair, "translator.name=c2c", "translator.hidden=16", "translator.intermediate=16",
                       "injection=fused_prompt", "task.chat_template=true", "translator.include_response=true",
                       "train.steps=2", "train.warmup_steps=0", "eval.every=2", "eval.n=2", "eval.dev_n=2")
    setting = lambda value: {**data, "translator": {**data["translator"], "chat_alignment": value}}  # noqa: E731
    (tmp_path / "r.yaml").write_text(json.dumps(setting("sections")))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "r.yaml")])
    assert result.exit_code == 2 and "translator.chat_alignment=reencode" in result.output, result.output
    (tmp_path / "ok.yaml").write_text(json.dumps(setting("reencode")))
    assert CliRunner().invoke(app, ["validate", str(tmp_path / "ok.yaml")]).exit_code == 0
    # auto, on a pair of two tokenizers (sections): the first step says so in one line, exit 2
    (tmp_path / "auto.yaml").write_text(json.dumps(setting("auto")))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "auto.yaml"), f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2 and "the two tokenizers differ" in result.output, result.output
    assert "Traceback" not in result.output


def test_auto_reads_the_receivers_ids_where_the_tokenizers_share_a_vocabulary(families):
    """One vocabulary (the C2C authors' Qwen pairs, alignment off): the sharer reads the receiver's own ids,
    template included, at the receiver's positions; two vocabularies: sections."""
    import json

    from latentbridge.bridge.build import Experiment
    from latentbridge.config.overrides import apply_overrides
    from latentbridge.config.recipe import validate_recipe

    from .test_kv_conformance import BASE, KINDS, experiment_for, prompts_of

    data = json.loads(json.dumps(BASE))
    folder = str(families.folders["qwen3"])
    data["models"] = {"source": folder, "target": folder, "device": "cpu", "dtype": "float32"}
    exp = Experiment.build(validate_recipe(apply_overrides(data, KINDS["c2c_chat"])))
    from latentbridge.bridge.retokenize import by_sections, sharer_rows

    bridge = exp.bridge
    prompts = prompts_of(exp, 2)
    assert bridge.source_states(prompts).sections is None and not by_sections(bridge, "auto")
    rows, aligned = sharer_rows(bridge, prompts, "first", {}, by_sections(bridge, "auto"))
    assert aligned is None and rows == [bridge.target_encoder.prompt_ids(p) for p in prompts]
    assert by_sections(bridge, "sections")  # asked for, whatever the vocabularies
    other = experiment_for(families, "gemma2", "target", "c2c_chat", "float32")
    assert by_sections(other.bridge, "auto") and not by_sections(other.bridge, "reencode")


def test_recipes_without_chat_templates_hash_as_before_the_option():
    """chat_alignment changes nothing without chat templates: such a c2c recipe hashes as before the option (its
    runs resume); with chat templates the default changed what a recipe does, so it hashes anew."""
    from latentbridge.io.card import recipe_hash

    before = {"task": {"name": "arith"}, "translator": {"name": "c2c", "hidden": 16}}
    now = {"task": {"name": "arith"}, "translator": {"name": "c2c", "hidden": 16, "chat_alignment": "auto"}}
    assert recipe_hash(now) == recipe_hash(before)
    other = {**now, "translator": {**now["translator"], "chat_alignment": "reencode"}}
    assert recipe_hash(other) != recipe_hash(before)
    chat = {"task": {"name": "arith", "chat_template": True}}
    assert recipe_hash({**now, **chat}) != recipe_hash({**before, **chat})


def test_earlier_turns_have_no_text_to_align_by_last_character(chat_pair):
    import dataclasses

    import torch

    from latentbridge.errors import LatentBridgeError

    from .helpers import make_experiment

    exp = make_experiment(chat_pair, "translator.name=c2c", "translator.hidden=16", "translator.intermediate=16",
                          "injection=fused_prompt", "task.chat_template=true", "translator.alignment=last_character")
    prompt = exp.task.prompt(exp.task.examples("test")[0])
    turned = dataclasses.replace(prompt, turns=(("system", "Be brief."),))
    with torch.no_grad():
        exp.bridge.bridged_inputs(exp.bridge.message([prompt]), [prompt], with_answer=False)  # without turns: fine
        with pytest.raises(LatentBridgeError, match="no text to align them by with alignment: last_character"):
            exp.bridge.bridged_inputs(exp.bridge.message([turned]), [turned], with_answer=False)


TURNS = (("system", "Be brief and exact."), ("user", "What is two plus three?"), ("assistant", "It is five."))


@pytest.mark.parametrize(("target", "turns"), [("gemma2", ()), ("llama3", ()), ("llama3", TURNS)])
def test_each_fused_entry_reads_its_own_re_encoding_at_the_padded_positions(families, target, turns):
    """The sharer's cache is its own pass over its row at the padded sequence's positions, and each fused message
    entry is the fuser applied to the receiver's entry and the sharer's entry of that token's re-encoding
    (qwen3 -> gemma2: the receiver padded; olmo2 -> llama3: the sharer). With earlier turns (a system instruction,
    a few-shot exchange), each turn's content is a message section too, as the authors' content spans make it."""
    import dataclasses

    import torch
    from transformers import DynamicCache

    from latentbridge.bridge.models import cache_of, with_cache

    from .test_kv_conformance import experiment_for, prompts_of

    exp = experiment_for(families, target, "target", "c2c_chat", "float32")
    bridge = exp.bridge
    prompts = [dataclasses.replace(p, turns=turns) for p in prompts_of(exp, 2)]
    for encoder in (bridge.target_encoder, bridge.source_encoder):  # the flagged runs: each content, in order
        ids, flags = encoder.prompt_ids(prompts[0]), encoder.message_flags(prompts[0])
        pieces = [encoder.tokenizer.decode([i for i, f in zip(ids[a:b], flags[a:b], strict=True) if f]).strip()
                  for is_message, a, b in sections_of(flags) if is_message]
        contents = [text for _, text in turns] + [(prompts[0].header + prompts[0].question).strip()]
        assert [p.replace(" ", "") for p in pieces[: len(contents)]] == [c.replace(" ", "") for c in contents]
    with torch.no_grad():
        message = bridge.message(prompts)
        sharer = bridge.source.model
        gaps = [s.positions[-1] + 1 - len(s.positions) for s in message.sections]
        assert (max(gaps) > 0) == (target == "llama3")  # the sharer's own row skips positions where it is shorter
        for r, sections in enumerate(message.sections):
            real = message.mask[r].bool()
            out = sharer(input_ids=torch.tensor([sections.ids]), position_ids=torch.tensor([sections.positions]),
                         use_cache=True, **with_cache(sharer, DynamicCache()))
            own_keys = cache_of(out).layers[-1].keys[0]
            torch.testing.assert_close(message.keys[-1][r][:, real], own_keys, atol=1e-4, rtol=1e-4)
        fused = _fused_keys(exp, prompts)
        saved = {k: v.clone() for k, v in exp.translator.state_dict().items()}
        try:
            for fuser in exp.translator.fusers.values():
                for part in ("key", "value"):
                    fuser.part(part, "proj_out").weight.zero_()
                    fuser.part(part, "proj_out").bias.zero_()
            inputs = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=False)
            own = [(layer.keys.clone(), layer.values.clone()) for layer in next(iter(inputs.cache().values())).layers]
        finally:
            exp.translator.load_state_dict(saved)
        layer = max(t for t, s in enumerate(message.layers) if s is not None)
        sk, sv = message.keys[message.layers[layer]], message.values[message.layers[layer]]
        width = own[layer][0].shape[2]
        for r, (prompt, sections) in enumerate(zip(prompts, message.sections, strict=True)):
            flags = bridge.target_encoder.message_flags(prompt)
            runs_of = sections_of(flags)
            cut = max(end for is_message, _, end in runs_of[:-1] if is_message)
            start_src = message.mask.shape[1] - int(message.mask[r].sum())
            received = [i for i in range(cut) if flags[i]]
            for i, slot in zip(received, sections.message_slots, strict=False):
                c, s = width - cut + i, start_src + slot
                ok, ov = own[layer][0][r : r + 1, :, c : c + 1], own[layer][1][r : r + 1, :, c : c + 1]
                expected, _ = message.fuse(layer, ok, ov, sk[r : r + 1, :, s : s + 1], sv[r : r + 1, :, s : s + 1])
                torch.testing.assert_close(fused[layer][r : r + 1, :, c : c + 1], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("special", ["fused", "own"])
def test_reencode_fuses_every_prompt_token_but_the_last_one_for_one(families, special):
    """chat_alignment: reencode (one vocabulary, the authors' recipes with alignment off): receiver slot i is fused
    with sharer slot i for every prompt token but the last, the BOS and the template's markup in the middle of
    the row included, as the authors' unaligned path fuses them; ``special_tokens: own`` (the former behaviour)
    keeps the receiver's own entries at its tokens without text in the prompt: the template's markup and the cue
    after it (slot 0 for each, or a fuse of them, would fail here). A control's source read another prompt: its
    slots spread over the other row in proportion, not one for one."""
    import json

    import torch

    from latentbridge.bridge.build import Experiment
    from latentbridge.config.overrides import apply_overrides
    from latentbridge.config.recipe import validate_recipe

    from .test_kv_conformance import BASE, KINDS, prompts_of

    data = json.loads(json.dumps(BASE))
    folder = str(families.folders["qwen3"])
    data["models"] = {"source": folder, "target": folder, "device": "cpu", "dtype": "float32"}
    exp = Experiment.build(validate_recipe(apply_overrides(
        data, [*KINDS["c2c_chat"], "translator.chat_alignment=reencode", f"translator.special_tokens={special}"])))
    bridge = exp.bridge
    prompts = prompts_of(exp, 2)
    exp.translator.eval()
    with torch.no_grad():
        for fuser in exp.translator.fusers.values():  # open every gate: a fused entry differs from the receiver's
            fuser.key_gate_logit.fill_(1.0)
            fuser.value_gate_logit.fill_(1.0)
        message = bridge.message(prompts)
        fused = _fused_keys(exp, prompts)
        other = bridge.message(prompts[::-1])  # what the shuffled control hands each row: the other prompt's
        inputs = bridge.bridged_inputs(other, prompts, with_answer=False)
        shuffled = [layer.keys for layer in next(iter(inputs.cache().values())).layers]
        reads = [bridge.target_encoder.prompt_ids(p) for p in prompts]
        own = [bridge.target.model(input_ids=torch.tensor([r[:-1]]), use_cache=True).past_key_values for r in reads]
    flags = [bridge.target_encoder.message_flags(p) for p in prompts]
    layer = max(t for t, s in enumerate(message.layers) if s is not None)
    width = fused[layer].shape[2]
    for r, read in enumerate(reads):
        n = len(read) - 1
        assert not all(flags[r][:n]) and any(flags[r][1:n])  # template tokens before and among the fused ones
        spans = [(0, 0)] * len(bridge.target_encoder.target_text(prompts[r]).prefix) + \
            list(bridge.target_encoder.offsets(prompts[r]))
        textless = torch.tensor([b <= a for a, b in spans[:n]])
        assert (textless & torch.tensor(flags[r][:n])).any()  # the cue: message text, none of the prompt's
        ok, ov = own[r].layers[layer].keys, own[r].layers[layer].values
        for msg, got_all, slots in ((message, fused, list(range(n))), (other, shuffled, None)):
            sk, sv = msg.keys[msg.layers[layer]], msg.values[msg.layers[layer]]
            n_src = int(msg.mask[r].sum())
            slots = slots or [min(n_src - 1, i * n_src // n) for i in range(n)]  # the other row's, in proportion
            assert (slots == list(range(n))) == (msg is message)
            at = torch.tensor(slots) + msg.mask.shape[1] - n_src
            expected, _ = msg.fuse(layer, ok, ov, sk[r : r + 1, :, at], sv[r : r + 1, :, at])
            if special == "own":
                expected = torch.where(textless[None, None, :, None], ok, expected)
            got = got_all[layer][r : r + 1, :, width - n :]
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        got = fused[layer][r : r + 1, :, width - n :]
        changed = (got - ok).abs().amax(dim=(0, 1, 3)) > 1e-6
        assert changed[~textless].all()  # every token with text fused
        assert changed[textless].all() == (special == "fused")
        assert changed[textless].any() == (special == "fused")


def test_special_tokens_hash_and_old_run_folders_as_they_were_made(tmp_path):
    """special_tokens changed what a c2c recipe with alignment: retokenize does (its special and template tokens are
    fused now): such a recipe hashes anew, and at ``own`` as before; a run folder's recipe written before the field
    is read at the value it ran with (own; fused under last_character), a recipe file elsewhere at the default."""
    import yaml

    from latentbridge.config.recipe import load_recipe
    from latentbridge.io.card import recipe_hash

    before = {"task": {"name": "arith"}, "translator": {"name": "c2c", "hidden": 16}}
    assert recipe_hash({"task": before["task"], "translator": {**before["translator"], "special_tokens": "own"}}) \
        == recipe_hash(before)
    assert recipe_hash({"task": before["task"], "translator": {**before["translator"], "special_tokens": "fused"}}) \
        != recipe_hash(before)
    last = {"task": before["task"], "translator": {**before["translator"], "alignment": "last_character"}}
    assert recipe_hash({**last, "translator": {**last["translator"], "special_tokens": "fused"}}) == recipe_hash(last)
    assert recipe_hash({**last, "translator": {**last["translator"], "special_tokens": "own"}}) != recipe_hash(last)

    recipe = load_recipe("c2c_fusion").to_dict()
    assert recipe["translator"]["special_tokens"] == "fused"
    for alignment, former in (("retokenize", "own"), ("last_character", "fused")):
        folder = tmp_path / alignment
        folder.mkdir()
        old = {**recipe, "translator": {k: v for k, v in recipe["translator"].items() if k != "special_tokens"}}
        old["translator"]["alignment"] = alignment
        (folder / "recipe.yaml").write_text(yaml.safe_dump(old))
        assert load_recipe(folder / "recipe.yaml").translator.config.special_tokens == "fused"  # not a run folder
        (folder / "run.json").write_text("{}")
        assert load_recipe(folder / "recipe.yaml").translator.config.special_tokens == former
        assert load_recipe(folder / "recipe.yaml", ["translator.special_tokens=fused"]).translator.config.special_tokens \
            == "fused"  # an override still decides


FOLDING = ("{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}{% if m['role'] == 'system' %}"
           "{% set ns.sys = m['content'] + '\n\n' %}{% endif %}{% endfor %}{% for m in messages %}"
           "{% if m['role'] == 'user' %}[INST] {{ (ns.sys if loop.last else '') + m['content'] }} [/INST]"
           "{% elif m['role'] == 'assistant' %}{{ m['content'] }}</s>{% endif %}{% endfor %}")


@pytest.mark.parametrize("folding", [False, True])
def test_each_turns_content_is_flagged_where_the_template_puts_it(families, folding):
    """Each earlier turn's content is a message section where the template writes it: trimmed (Llama-3's template
    strips), a one-letter answer never matched inside the markup before it ('a' in 'start_header_id'), a system
    message folded into the last user turn (Mistral's template) after the few-shot turns; every other character
    of the template is template."""
    from transformers import AutoTokenizer

    from latentbridge.api.task import Prompt
    from latentbridge.bridge.encoding import PromptEncoder

    tokenizer = AutoTokenizer.from_pretrained(families.folders["llama3"])
    if folding:
        tokenizer.chat_template = FOLDING
    turns = (("system", " Be brief. "), ("user", "What is two plus three?"), ("assistant", "a"))
    prompt = Prompt(header="", question="Question: what is one plus one?\n", cue="Answer:", answer="", turns=turns)
    encoder = PromptEncoder(tokenizer, chat=True, name="llama3")
    full = encoder.text(prompt)
    answer_anchor = ("a</s>", 0) if folding else ("\n\na<|eot_id|>", 2)
    system = " Be brief. " if folding else "Be brief."  # as written (the folding template), or trimmed (Llama-3's)
    regions = [(full.index(system), full.index(system) + len(system)),
               (full.index("What is two"), full.index("What is two") + len("What is two plus three?")),
               (full.index(answer_anchor[0]) + answer_anchor[1], full.index(answer_anchor[0]) + answer_anchor[1] + 1),
               (full.index("Question:"), full.index("Question:") + len("Question: what is one plus one?")),
               (len(full) - len("Answer:"), len(full))]
    assert folding == (regions[0][0] > regions[2][0])  # folded: the system message after the few-shot turns
    spans = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    flags = encoder.message_flags(prompt)
    assert len(flags) == len(spans)
    for (a, b), flag in zip(spans, flags, strict=True):
        inside = any(a < end and b > begin for begin, end in regions)
        assert flag == inside, (full[a:b], flag)
