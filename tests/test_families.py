"""Architecture conformance: every supported family, as source and as target, on tiny random models.

The families (``families.py``, built once per session by the ``families`` fixture) are paired in a ring,
``NAMES[i] -> NAMES[i + 1]``, so each is the source of one experiment and the target of another. For each
family:

* its folder loads as the family's real checkpoints do (``test_folder_loads_as_the_family``);
* the layout's logits equal ``model(input_ids)`` (``test_layout_logits_equal_plain_forward``);
* left padding equals no padding, on the target (text and bridged layouts) and on the source
  (``test_target_left_padding_equals_no_padding``, ``test_source_left_padding_equals_no_padding``);
* cached greedy generation equals transformers' ``generate`` (``test_generation_equals_transformers_generate``);
* the shared-prefix source path equals the plain forward, prompts longer than the sliding window
  included (``test_shared_prefix_source_equals_plain_forward``);
* the soft tokens' scale equals the real input-embedding scale (``test_soft_token_scale``);
* BOS appears once and first, as the family's own tokenizer or chat template puts it (``test_bos_once_and_first``);
* one step of every built-in objective gives a finite loss and gradient (``test_every_objective_one_step``);
* ``latentbridge run`` of the shipped ``answer_softplus`` recipe finishes (``test_cli_run_main_recipe``), and
  ``validate`` of a recipe with every objective passes or refuses with one ``error:`` line
  (``test_cli_validate_every_objective``), and ``run`` of that recipe finishes or is refused the same way
  (``test_cli_run_every_objective``); ``test_every_objective_one_step`` checks each objective's loss and
  gradient on each target directly.

Nothing here is marked ``slow``: the whole file takes about a minute on two busy cores with
``OMP_NUM_THREADS=1`` (the models are 2 layers of width 32-64; every CLI run is 2 steps and 4+4 items).
Should it have to shrink, ``test_cli_run_every_objective`` is the part to mark: ``test_every_objective_one_step``
covers each objective on each architecture and ``test_cli_run_main_recipe`` the CLI, training loop and
evaluation on each family as source and as target.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from latentbridge.bridge.build import Experiment
from latentbridge.bridge.core import Bridge
from latentbridge.bridge.facts import model_problems, read_facts
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.layout import assemble, left_pad
from latentbridge.bridge.models import load_frozen
from latentbridge.bridge.prefix import MIN_SHARED_PREFIX, common_prefix
from latentbridge.cli import app
from latentbridge.config.overrides import apply_overrides
from latentbridge.config.recipe import validate_recipe
from latentbridge.registry.host import Registry, get_registry
from latentbridge.train.steps import StepBuilder

from .families import FAMILIES, NAMES, WINDOW

ATOL = RTOL = 1e-4
cli = CliRunner()


def target_of(name: str) -> str:
    return NAMES[(NAMES.index(name) + 1) % len(NAMES)]


def source_of(name: str) -> str:
    return NAMES[(NAMES.index(name) - 1) % len(NAMES)]


BASE = {
    "name": "families",
    "seed": 0,
    "models": {"source": None, "target": None},
    # two fixed exemplars: every prompt shares a few-shot header of well over MIN_SHARED_PREFIX tokens,
    # longer than the sliding window (16) of the sliding-window families
    "task": {"name": "arith", "n_train": 200, "n_test": 12, "shots": 2},
    "translator": {"name": "linear", "k": 3},
    "injection": "soft_plus_text",
    "objectives": {"nll": {"weight": 1.0}},
    "train": {"steps": 2, "batch_size": 4, "lr": 1.0e-2, "log_every": 1},
    "eval": {"every": 2, "n": 4, "dev_n": 4, "batch_size": 4, "max_new_tokens": 4},
}

_EXPERIMENTS: dict[tuple[str, str], Experiment] = {}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def experiment(families):
    """``experiment(source, target)``: the ring experiment of that pair, built once per session."""

    def get(source: str, target: str, *overrides: str) -> Experiment:
        key = (source, target, *overrides)
        if key not in _EXPERIMENTS:
            data = json.loads(json.dumps(BASE))
            data["models"] = {"source": str(families.folders[source]), "target": str(families.folders[target]),
                              "device": "cpu"}
            _EXPERIMENTS[key] = Experiment.build(validate_recipe(apply_overrides(data, list(overrides))))
        return _EXPERIMENTS[key]

    return get


def as_target(experiment, name: str) -> Experiment:
    return experiment(source_of(name), name)


def as_source(experiment, name: str) -> Experiment:
    return experiment(name, target_of(name))


def prompts_of(exp: Experiment, n: int = 4):
    return [exp.task.prompt(e) for e in exp.task.examples("test")[:n]]


def zero_shot(prompts):
    return [dataclasses.replace(p, header="") for p in prompts]


def real(t: torch.Tensor, mask: torch.Tensor, r: int) -> torch.Tensor:
    return t[r][mask[r].bool()]


# --------------------------------------------------------------------------------------------------
# the folders
# --------------------------------------------------------------------------------------------------


def test_families_build_in_seconds(families):
    times = ", ".join(f"{n} {s:.2f}s" for n, s in families.seconds.items())
    print(f"\nfamilies built in {families.total:.2f}s: {times}")
    assert set(families.folders) == set(NAMES)
    assert families.total < 30, times


@pytest.mark.parametrize("name", NAMES)
def test_folder_loads_as_the_family(families, name):
    """What the tests below rely on: each folder is laid out as the family's real checkpoints, and
    load_frozen / read_facts read it so (tied embeddings, shards, pad, eos list, window, rotary)."""
    fam, _ = FAMILIES[name]
    folder = families.folders[name]
    m = load_frozen(str(folder), device="cpu")
    assert type(m.model).__name__ == fam.model_class
    assert m.dtype == torch.float32  # dtype auto: the checkpoint's own
    shards = sorted(folder.glob("*.safetensors"))
    assert ((folder / "model.safetensors.index.json").is_file() and len(shards) > 1) == fam.sharded
    out = m.model.get_output_embeddings().weight
    assert (out.data_ptr() == m.model.get_input_embeddings().weight.data_ptr()) == fam.tied
    tok = m.tokenizer
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == fam.tokenizer_class
    ids = tok("Question: 1")["input_ids"]
    assert (tok.bos_token_id is not None and ids[0] == tok.bos_token_id) == fam.bos_added
    assert tok.pad_token == fam.pad and tok.eos_token == fam.eos
    if fam.pad is None:
        assert m.pad_id == tok.eos_token_id  # padding with EOS, always masked out
    else:
        assert m.pad_id == tok.pad_token_id
    assert m.eos_ids() == {tok.convert_tokens_to_ids(t) for t in fam.eos_list} | {tok.eos_token_id}
    assert bool(tok.chat_template) == fam.chat
    assert (m.vocab_size > len(tok)) == fam.padded_vocab and m.vocab_size >= len(tok)
    assert m.sliding_window == fam.sliding_window
    facts = read_facts(name, folder)
    assert facts.rotary == fam.rotary and facts.hidden_size == m.hidden_size and facts.num_layers == m.num_layers
    assert facts.chat_template == fam.chat and facts.multimodal == (name == "gemma3")


# --------------------------------------------------------------------------------------------------
# the target's layout
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_layout_logits_equal_plain_forward(experiment, name):
    """One row laid out by ``Bridge.text_inputs`` (embedded by the model's own module, positions from the
    mask) gives the logits of ``model(input_ids)``."""
    exp = as_target(experiment, name)
    bridge, target = exp.bridge, exp.bridge.target
    with torch.no_grad():
        for p in prompts_of(exp, 2):
            row = bridge.target_encoder.prompt_ids(p)
            inputs = bridge.text_inputs(target, [row])
            laid_out = target.model(**inputs.model_kwargs()).logits[0]
            plain = target.model(input_ids=torch.tensor([row])).logits[0]
            torch.testing.assert_close(laid_out, plain, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", NAMES)
def test_target_left_padding_equals_no_padding(experiment, name):
    """A left-padded batch gives each row the logits it gets alone: text rows and bridged rows."""
    exp = as_target(experiment, name)
    bridge, target = exp.bridge, exp.bridge.target
    prompts = prompts_of(exp, 4)
    with torch.no_grad():
        rows = [bridge.target_encoder.prompt_ids(p) for p in prompts]
        assert len({len(r) for r in rows}) > 1, "the batch must mix padding amounts"
        assert min(len(r) for r in rows) > 2 * WINDOW  # longer than any sliding window
        batch = bridge.text_inputs(target, rows)
        logits = target.model(**batch.model_kwargs()).logits
        for r, row in enumerate(rows):
            alone = target.model(input_ids=torch.tensor([row])).logits[0]
            torch.testing.assert_close(real(logits, batch.attention_mask, r), alone, atol=ATOL, rtol=RTOL)
        soft = bridge.soft_tokens(prompts)
        batch = bridge.bridged_inputs(soft, prompts, with_answer=True)
        logits = target.model(**batch.model_kwargs()).logits
        for r in range(len(prompts)):
            one = bridge.bridged_inputs(soft[r : r + 1], prompts[r : r + 1], with_answer=True)
            assert bool(one.attention_mask.all())
            alone = target.model(**one.model_kwargs()).logits[0]
            torch.testing.assert_close(real(logits, batch.attention_mask, r), alone, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", NAMES)
def test_source_left_padding_equals_no_padding(experiment, name):
    """``Bridge.source_hidden`` of a left-padded batch (no long shared prefix) equals each row alone."""
    exp = as_source(experiment, name)
    bridge, source = exp.bridge, exp.bridge.source
    prompts = zero_shot(prompts_of(exp, 4))
    rows = bridge.source_rows(prompts)
    assert common_prefix(rows) < MIN_SHARED_PREFIX and len({len(r) for r in rows}) > 1
    with torch.no_grad():
        h, mask = bridge.source_hidden(prompts)
        for r, row in enumerate(rows):
            alone = source.model(input_ids=torch.tensor([row]), output_hidden_states=True).hidden_states
            torch.testing.assert_close(real(h, mask, r), alone[bridge.source_layer][0], atol=ATOL, rtol=RTOL)


# --------------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------------


def _until_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[:i]
    return ids


# transformers' generate() refuses inputs_embeds for Gemma3ForConditionalGeneration ("doesn't have its
# forwarding implemented"): its bridged rows are checked against greedy decoding recomputed without a cache
GENERATE_REFUSES_EMBEDS = {"gemma3"}


def recomputed_greedy(model, inputs, n: int) -> torch.Tensor:
    """Greedy tokens by re-running the whole left-padded sequence at every step (no cache)."""
    embeds, mask, pos = inputs.inputs_embeds, inputs.attention_mask, inputs.position_ids
    out = []
    for _ in range(n):
        token = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits[:, -1].argmax(-1)
        out.append(token)
        embeds = torch.cat([embeds, model.get_input_embeddings()(token[:, None])], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = torch.cat([pos, pos[:, -1:] + 1], 1)
    return torch.stack(out, 1)


@pytest.mark.parametrize("name", NAMES)
def test_generation_equals_transformers_generate(experiment, name):
    """``greedy_generate`` (key/value cache, positions per row, left padding) gives the tokens of
    transformers' own ``generate(do_sample=False)``, from bridged inputs and from plain text."""
    exp = as_target(experiment, name)
    bridge, target = exp.bridge, exp.bridge.target
    model, eos = target.model, target.eos_ids()
    prompts = prompts_of(exp, 3)
    n = 8
    settings = dict(max_new_tokens=n, do_sample=False, eos_token_id=sorted(eos), pad_token_id=target.pad_id,
                    top_p=None, top_k=None, temperature=None)
    with torch.no_grad():
        soft = bridge.soft_tokens(prompts)
        inputs = bridge.bridged_inputs(soft, prompts, with_answer=False)
        ours = greedy_generate(model, target.tokenizer, inputs, max_new_tokens=n, eos_ids=eos)
        assert any(out.token_ids for out in ours), "nothing generated: the comparison would be empty"
        if name in GENERATE_REFUSES_EMBEDS:
            theirs = recomputed_greedy(model, inputs, n)
        else:
            theirs = model.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask, **settings)
        for r, out in enumerate(ours):
            assert out.token_ids == _until_eos(theirs[r].tolist(), eos), f"bridged row {r}"
        rows = [bridge.target_encoder.prompt_ids(p) for p in prompts]
        assert min(len(r) for r in rows) > 2 * WINDOW  # the sliding-window caches drop the oldest keys
        text = bridge.text_inputs(target, rows)
        ours = greedy_generate(model, target.tokenizer, text, max_new_tokens=n, eos_ids=eos)
        ids, mask = left_pad(rows, target.pad_id, target.device)
        theirs = model.generate(input_ids=ids, attention_mask=mask, **settings)[:, ids.shape[1]:]
        for r, out in enumerate(ours):
            assert out.token_ids == _until_eos(theirs[r].tolist(), eos), f"text row {r}"


# --------------------------------------------------------------------------------------------------
# the source's shared-prefix path
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_shared_prefix_source_equals_plain_forward(experiment, name, record_property):
    """Rows sharing a few-shot header of >= MIN_SHARED_PREFIX tokens (longer than any sliding window):
    ``Bridge.source_hidden`` equals, row by row on real tokens, the plain forward of each row alone, at the
    last layer and a middle one, on a first batch and on one that reuses the cached prefix. The prefix
    path is taken for every family: a sliding window is measured in positions (bridge/windows.py), so the
    padding between the prefix and each row's rest never enters it."""
    exp = as_source(experiment, name)
    source = exp.bridge.source
    prompts = prompts_of(exp, 4)
    rows = exp.bridge.source_rows(prompts)
    shared = common_prefix(rows)
    assert shared >= MIN_SHARED_PREFIX
    if source.sliding_window is not None:
        assert shared > source.sliding_window and min(len(r) for r in rows) > 2 * source.sliding_window
    with torch.no_grad():
        plain = [source.model(input_ids=torch.tensor([row]), output_hidden_states=True).hidden_states for row in rows]
        taken = []
        for layer in (-1, 1):
            bridge = dataclasses.replace(exp.bridge, source_layer=layer)  # fresh: no prefix cached yet
            original = bridge._hidden_with_prefix
            bridge._hidden_with_prefix = lambda *a, _o=original, _l=layer, **k: taken.append(_l) or _o(*a, **k)
            for batch in ("first", "cached prefix"):
                h, mask = bridge.source_hidden(prompts)
                for r in range(len(rows)):
                    torch.testing.assert_close(real(h, mask, r), plain[r][layer][0], atol=ATOL, rtol=RTOL,
                                               msg=lambda m, r=r, b=batch, n=layer: f"layer {n}, {b} batch, row {r}: {m}")
    record_property("prefix_path_taken", bool(taken))
    assert taken == [-1, -1, 1, 1], "the shared-prefix path was not taken"


# --------------------------------------------------------------------------------------------------
# the soft tokens' scale
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_soft_token_scale(experiment, name):
    """``target_rms`` (from ``FrozenModel.embedding_rms``) is the median RMS of what the model's input
    embedding module returns for the tokenizer's token ids (Gemma's module multiplies by sqrt(hidden)),
    and every soft token the translator gives has that RMS."""
    exp = as_target(experiment, name)
    target = exp.bridge.target
    with torch.no_grad():
        ids = torch.arange(len(target.tokenizer))
        embedded = target.model.get_input_embeddings()(ids).float()
        reference = float(embedded.pow(2).mean(-1).sqrt().median())
        # 2%: the median over the tokenizer's ids against the median over every embedding row (padded
        # vocabularies have a few more rows); a wrong scale is off by a factor (sqrt(hidden) for Gemma)
        assert math.isclose(exp.translator.config.target_rms, reference, rel_tol=0.02), \
            (exp.translator.config.target_rms, reference)
        soft = exp.bridge.soft_tokens(prompts_of(exp, 4)).float()
        rms = soft.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.full_like(rms, exp.translator.config.target_rms), rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_the_cached_header_reads_as_the_whole_row(experiment, name):
    """soft_after_header: the header (longer than any sliding window) read once as a cache, then the message
    and the question, gives each real token the logits of the same left-padded rows read whole, and
    greedy decoding after it continues as the whole rows' greedy decoding does."""
    exp = experiment(source_of(name), name, "injection=soft_after_header")
    bridge, target = exp.bridge, exp.bridge.target
    prompts = prompts_of(exp, 4)
    soft = torch.randn(len(prompts), exp.translator.k, target.hidden_size) * 0.05
    rows = [bridge.injection.segments(bridge.target_encoder.target_text(p, with_answer=False)) for p in prompts]
    with torch.no_grad():
        cached = bridge.bridged_inputs(soft, prompts, with_answer=False)
        plain = assemble(rows, soft.to(target.dtype), target.embed, target.pad_id)
        assert cached.cache is not None and cached.attention_mask.shape[1] - cached.inputs_embeds.shape[1] > 2 * WINDOW
        fast = target.model(**cached.model_kwargs()).logits
        slow = target.model(**plain.model_kwargs()).logits
        mask = cached.attention_mask[:, -fast.shape[1]:].bool()
        for r in range(len(prompts)):
            mine = fast[r][mask[r]]
            torch.testing.assert_close(mine, real(slow, plain.attention_mask, r)[-mine.shape[0]:], atol=ATOL, rtol=RTOL)
        after = greedy_generate(target.model, target.tokenizer, cached, max_new_tokens=3, eos_ids=set(), stop=[])
        whole = greedy_generate(target.model, target.tokenizer, plain, max_new_tokens=3, eos_ids=set(), stop=[])
    assert [o.token_ids for o in after] == [o.token_ids for o in whole]


# --------------------------------------------------------------------------------------------------
# BOS
# --------------------------------------------------------------------------------------------------

MODES = ["soft_plus_text", "soft_only", "adapter"]
BOS_CASES = [pytest.param(n, False, id=f"{n}-plain") for n in NAMES]
BOS_CASES += [pytest.param(n, True, id=f"{n}-chat") for n in NAMES if FAMILIES[n][0].chat]


def reference_ids(tok, prompt, chat: bool) -> list[int]:
    """What the family's own tokenizer gives for the prompt: ``tokenizer(text)``, or its chat template."""
    if not chat:
        return list(tok(prompt.text)["input_ids"])
    text = tok.apply_chat_template([{"role": "user", "content": prompt.header + prompt.question}], tokenize=False,
                                   add_generation_prompt=True)
    return list(tok(text + prompt.cue, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize(("name", "chat"), BOS_CASES)
def test_bos_once_and_first(experiment, name, chat):
    """As source and as target, in every injection mode, in training and generation: BOS is read once
    and first (position 0) when the family's own tokenizer (or chat template) puts it there, never when
    it does not; every soft token comes after the special prefix."""
    exp = as_target(experiment, name)
    target = exp.bridge.target
    bridge = Bridge(target, target, exp.translator, exp.bridge.injection, -1, chat_template=chat)
    tok = target.tokenizer
    bos = tok.bos_token_id
    prompts = prompts_of(exp, 3)
    refs = [reference_ids(tok, p, chat) for p in prompts]
    expected = int(bos is not None and refs[0][0] == bos)
    assert all(r.count(bos) == expected for r in refs), "the family's own reference reads BOS more than once"
    for row in bridge.source_rows(prompts):  # as source
        assert row.count(bos) == expected and (not expected or row[0] == bos)
    registry = get_registry()
    soft = torch.randn(len(prompts), exp.translator.k, target.hidden_size)
    bos_embedding = target.embed(torch.tensor([bos]))[0] if bos is not None else None
    prefix = len(bridge.target_encoder.prefix)
    for mode_name in MODES:
        mode = registry.get("injection", mode_name).cls(registry.config_for("injection", mode_name))
        for with_answer in (True, False):
            with torch.no_grad():
                inputs = bridge.bridged_inputs(soft, prompts, with_answer, modes=[mode] * len(prompts))
            for r in range(len(prompts)):
                where = f"{mode_name}, {'training' if with_answer else 'generation'}, row {r}"
                first = int((inputs.attention_mask[r] == 0).sum())
                assert inputs.position_ids[r, first] == 0, where
                read = (inputs.attention_mask[r] == 1) & (inputs.labels[r] == -100)  # not the answer (eos may be bos)
                soft_at = inputs.soft_mask[r].nonzero().flatten()
                assert soft_at.numel() > 0 and int(soft_at.min()) >= first + prefix, where
                if bos_embedding is None:
                    continue
                is_bos = (inputs.inputs_embeds[r] == bos_embedding).all(-1) & read
                assert int(is_bos.sum()) == expected, where
                if expected:
                    assert bool(is_bos[first]), where


@pytest.mark.parametrize(("name", "chat"), BOS_CASES)
def test_prompt_ids_equal_the_family_tokenizer(experiment, name, chat):
    """The literal prompt the target (and source) reads is what the family's own tokenizer, or its chat
    template, gives for the same text."""
    exp = as_target(experiment, name)
    target = exp.bridge.target
    bridge = Bridge(target, target, exp.translator, exp.bridge.injection, -1, chat_template=chat)
    for p in prompts_of(exp, 3):
        assert bridge.target_encoder.prompt_ids(p) == reference_ids(target.tokenizer, p, chat)


# --------------------------------------------------------------------------------------------------
# objectives and the CLI
# --------------------------------------------------------------------------------------------------

REGISTRY = Registry.load(autoload=False)
BUILTIN = [n for n in REGISTRY.names("objective") if REGISTRY.get("objective", n).provider.distribution == "latentbridge"]
OBJECTIVE_OPTIONS = {"rope_phase": "layers: 1", "probe_head": "hidden: 16", "format_penalty": "max_new_tokens: 4, rows: 2",
                     "dit_flow": "weight: 0.1"}
EVERY_OBJECTIVE = [
    "objectives={" + ", ".join(f"{n}: {{{OBJECTIVE_OPTIONS.get(n, '')}}}" for n in BUILTIN) + "}",
    "translator={name: dit, k: 4, d_model: 16, heads: 2, sample_steps: 2}",
]
NON_ROTARY_REFUSAL = "objectives.rope_phase: needs a target with rotary position embeddings"


def small(families, source: str, target: str, run_dir) -> list[str]:
    return [f"models.source={families.folders[source]}", f"models.target={families.folders[target]}",
            "models.device=cpu", "train.steps=2", "train.batch_size=4", "train.warmup_steps=0", "eval.every=2",
            "eval.n=4", "eval.dev_n=4", "eval.batch_size=4", "eval.max_new_tokens=4", "task.n_train=200",
            "task.n_test=10", "translator.d_model=16", "translator.heads=2", "translator.depth=1", f"run_dir={run_dir}"]


def check_outcome(result, run_dir, refusal: str | None = None) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if refusal is not None:
        assert result.exit_code == 2 and len(errors) == 1 and refusal in result.stderr, result.output
        return
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["final"]["systems"]["bridged"]["n"] == 4


def expected_refusal(target: str) -> str | None:
    return None if FAMILIES[target][0].rotary else NON_ROTARY_REFUSAL


@pytest.mark.parametrize("name", NAMES)
def test_every_objective_one_step(families, name):
    """Every built-in objective (a DiT translator, for dit_flow) on this family as target: validate refuses
    only what it must (rope_phase without rotary embeddings); the rest give one finite loss whose
    gradient reaches the translator and nothing of the frozen models."""
    source = source_of(name)
    data = json.loads(json.dumps(BASE))
    data["models"] = {"source": str(families.folders[source]), "target": str(families.folders[name]), "device": "cpu"}
    data = apply_overrides(data, EVERY_OBJECTIVE)
    recipe = validate_recipe(data)
    problems = model_problems(recipe, get_registry())
    refusal = expected_refusal(name)
    folder = families.folders[name]
    assert problems == ([f"{NON_ROTARY_REFUSAL}; {folder} ({read_facts(str(folder), folder).model_type}) has none"]
                        if refusal else []), problems
    if refusal:
        del data["objectives"]["rope_phase"]
    exp = Experiment.build(validate_recipe(data))
    ctx = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, exp.task.examples("train")[:4])
    total = 0.0
    for objective_name, objective in exp.objectives.items():
        loss = objective(ctx)
        assert loss.ndim == 0 and bool(torch.isfinite(loss)), (objective_name, loss)
        total = total + loss
    total.backward()
    grads = [p.grad for p in exp.translator.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for m in (exp.bridge.source, exp.bridge.target) for p in m.model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_cli_run_main_recipe(families, name, tmp_path):
    """``latentbridge run answer_softplus`` with this family as source (and the next as target) finishes."""
    run_dir = tmp_path / "run"
    result = cli.invoke(app, ["run", "answer_softplus", *small(families, name, target_of(name), run_dir)])
    check_outcome(result, run_dir)


@pytest.mark.parametrize("name", NAMES)
def test_cli_validate_every_objective(families, name, tmp_path):
    """``latentbridge validate`` of the every-objective recipe, this family as target: ok, or exit 2 with
    one ``error:`` line (GPT-2: rope_phase needs rotary embeddings)."""
    run_dir = tmp_path / "run"
    args = ["validate", "answer_softplus", *small(families, source_of(name), name, run_dir), *EVERY_OBJECTIVE]
    result = cli.invoke(app, args)
    refusal = expected_refusal(name)
    if refusal is None:
        assert result.exit_code == 0 and "is a valid recipe" in result.stdout, result.output
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and refusal in result.stderr, result.output


@pytest.mark.parametrize("name", NAMES)
def test_cli_run_every_objective(families, name, tmp_path):
    """``latentbridge run`` of the every-objective recipe, this family as target: finishes, or (no rotary
    embeddings) exits 2 with one ``error:`` line naming rope_phase."""
    run_dir = tmp_path / "run"
    args = ["run", "answer_softplus", *small(families, source_of(name), name, run_dir), *EVERY_OBJECTIVE]
    check_outcome(cli.invoke(app, args), run_dir, expected_refusal(name))
