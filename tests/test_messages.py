"""Key/value messages (``kv_prefix``, ``kv_fusion``): one layout for training and generation, exact
positions and masks under left padding, the model's own cache objects, gradients, and the recipe checks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentbridge.api.messages import KVFusion, KVPrefix, SoftTokens
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.kv import align
from latentbridge.bridge.layout import left_pad, positions_from_mask
from latentbridge.bridge.models import cache_of
from latentbridge.config.schema import ConfigError

from .helpers import make_experiment, make_recipe

KV = [("kv_prefix", "soft_plus_text"), ("kv_prefix", "soft_only"), ("c2c", "fused_prompt")]
PAIRS = [False, True]
PAIR_IDS = ["llama->mistral", "mistral->llama"]


def experiment(pair, translator, mode, *more, reverse=False):
    small = ["translator.hidden=32", "translator.intermediate=32"] if translator == "c2c" else []
    return make_experiment(pair, f"translator={translator}", f"injection={mode}", "task.shots=1",
                           "task.exemplars=per_item", *small, *more, reverse=reverse)


def batch(exp, n=5):
    examples = exp.task.examples("test")[:n]  # different lengths: different left padding
    return examples, [exp.task.prompt(e) for e in examples]


def train(exp, steps=3):
    """A few optimiser steps so that the fusers and heads are no longer at their initial values."""
    from latentbridge.train.steps import StepBuilder

    builder = StepBuilder(exp, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(exp.translator.parameters(), lr=0.05)
    exp.translator.train()
    for step in range(1, steps + 1):
        ctx = builder.context(step, exp.task.examples("train")[:4])
        loss = exp.objectives["nll"](ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    exp.translator.eval()


@pytest.mark.parametrize(("translator", "mode"), KV, ids=[f"{t}+{m}" for t, m in KV])
@pytest.mark.parametrize("reverse", PAIRS, ids=PAIR_IDS)
def test_teacher_forced_logits_equal_first_generation_step(random_pair, translator, mode, reverse):
    """What the target reads in training (with the answer) is what it reads in generation: the logits
    before the first answer token are the first generated token's logits, on a left-padded batch."""
    exp = experiment(random_pair, translator, mode, reverse=reverse)
    train(exp)
    bridge = exp.bridge
    _, prompts = batch(exp)
    with torch.no_grad():
        message = bridge.message(prompts)
        train_inputs = bridge.bridged_inputs(message, prompts, with_answer=True)
        gen_inputs = bridge.bridged_inputs(message, prompts, with_answer=False)
        model = bridge.target.model
        teacher = model(**train_inputs.model_kwargs()).logits
        first_step = model(**gen_inputs.model_kwargs()).logits[:, -1]
    assert train_inputs.cache is not None and gen_inputs.cache is not None
    width = teacher.shape[1]
    for r, prompt in enumerate(prompts):
        answer = bridge.target_encoder.target_text(prompt).answer
        first_answer = width - len(answer)
        assert train_inputs.labels[r, first_answer:].tolist() == list(answer)
        assert (train_inputs.labels[r, :first_answer] == -100).all()
        torch.testing.assert_close(teacher[r, first_answer - 1], first_step[r], rtol=1e-4, atol=1e-4)
    generated = greedy_generate(model, bridge.target.tokenizer, gen_inputs, max_new_tokens=2, eos_ids=set())
    for r, out in enumerate(generated):
        answer = bridge.target_encoder.target_text(prompts[r]).answer
        assert out.token_ids[0] == int(teacher[r, width - len(answer) - 1].argmax())


@pytest.mark.parametrize("reverse", PAIRS, ids=PAIR_IDS)
def test_fusion_with_zero_deltas_is_the_target_reading_its_own_prompt(random_pair, reverse):
    """A fuser that changes nothing must give exactly the target's own logits on prompt + answer: the
    split of the prompt into cache and input, the padding in between and the positions are right. A fresh
    c2c at evaluation is one: its gates start closed (logit 0, the reference's initialisation)."""
    exp = experiment(random_pair, "c2c", "fused_prompt", reverse=reverse)
    exp.translator.eval()
    assert all(float(f.gate_logit(kind).detach()) == 0.0 for f in exp.translator.fusers.values() for kind in ("key", "value"))
    bridge = exp.bridge
    _, prompts = batch(exp)
    with torch.no_grad():
        fused = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=True)
        got = bridge.target.model(**fused.model_kwargs()).logits
        rows = [bridge.target_encoder.prompt_ids(p) + list(bridge.target_encoder.target_text(p).answer) for p in prompts]
        plain = bridge.text_inputs(bridge.target, rows)
        want = bridge.target.model(**plain.model_kwargs()).logits
    for r, prompt in enumerate(prompts):
        n = len(bridge.target_encoder.target_text(prompt).answer) + 1  # the last prompt token and the answer
        torch.testing.assert_close(got[r, -n:], want[r, -n:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mapping", ["last_aligned", "terminal"])
@pytest.mark.parametrize("reverse", PAIRS, ids=PAIR_IDS)
def test_fusion_changes_the_prompt_cache_not_the_answer_positions(random_pair, reverse, mapping):
    """A trained fuser with open gates changes the logits (the fused cache is read), and the cache the
    target then reads differs from its own only at the prompt positions of the fused layers."""
    exp = experiment(random_pair, "c2c", "fused_prompt", f"translator.layer_map={mapping}", reverse=reverse)
    train(exp)
    bridge, translator = exp.bridge, exp.translator
    with torch.no_grad():
        for fuser in translator.fusers.values():  # open every gate
            fuser.key_gate_logit.fill_(1.0)
            fuser.value_gate_logit.fill_(1.0)
    _, prompts = batch(exp)
    with torch.no_grad():
        message = bridge.message(prompts)
        fused = bridge.bridged_inputs(message, prompts, with_answer=False)
        kv = fused.cache()
        cache = next(iter(kv.values()))
        reads = [bridge.target_encoder.prompt_ids(p)[:-1] for p in prompts]
        ids, mask = left_pad(reads, bridge.target.pad_id, bridge.target.device)
        own = cache_of(bridge.target.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                                           use_cache=True))
    assert cache.get_seq_length() == ids.shape[1]  # the cache holds the prompt without its last token only
    real = mask.bool()
    for layer, source_layer in enumerate(translator.layer_map):
        fused_keys, own_keys = cache.layers[layer].keys, own.layers[layer].keys
        differs = (fused_keys - own_keys).abs().amax(dim=(1, 3)) > 1e-6  # b t
        if source_layer is None:
            assert not differs.any(), f"layer {layer} is not mapped to a source layer and must not change"
        else:
            assert differs[real].any(), f"layer {layer} is fused but its cache did not change"


def test_layer_maps(random_pair):
    """last_aligned (the reference): receiver layer t reads sharer layer t + (L_s - L_r), clamped to 0, so
    every receiver layer is fused; terminal leaves the layers below the offset unfused."""
    from latentbridge.plugins.translators.c2c import layer_map

    assert layer_map(24, 28, "last_aligned") == [0, 0, 0, 0, 0, *range(1, 24)]  # Qwen3-0.6B <- Qwen2.5-0.5B
    assert layer_map(24, 28, "terminal") == [None] * 4 + list(range(24))
    assert layer_map(32, 28, "last_aligned") == layer_map(32, 28, "terminal") == list(range(4, 32))
    exp = experiment(random_pair, "c2c", "fused_prompt")  # llama (2 layers) -> mistral (3 layers)
    assert exp.translator.layer_map == [0, 0, 1] and sorted(exp.translator.fusers) == ["0", "1", "2"]
    exp = experiment(random_pair, "c2c", "fused_prompt", "translator.layer_map=terminal")
    assert exp.translator.layer_map == [None, 0, 1] and sorted(exp.translator.fusers) == ["1", "2"]
    exp = experiment(random_pair, "c2c", "fused_prompt", reverse=True)  # mistral (3) -> llama (2)
    assert exp.translator.layer_map == [1, 2]


@pytest.mark.parametrize("reverse", PAIRS, ids=PAIR_IDS)
def test_kv_prefix_of_real_keys_equals_reading_the_text(random_pair, reverse):
    """Virtual tokens whose keys and values are the target's own cache of a text X (at the positions
    right after BOS) must make the target read [bos][X][prompt] exactly as if X were in the input."""
    exp = experiment(random_pair, "kv_prefix", "soft_plus_text", reverse=reverse)
    bridge, target = exp.bridge, exp.bridge.target
    _, prompts = batch(exp, 4)
    enc = bridge.target_encoder
    x = enc.ids(" seven apples and")
    prefix = list(enc.prefix)
    with torch.no_grad():
        ids = torch.tensor([prefix + x])
        own = cache_of(target.model(input_ids=ids, use_cache=True))
        n = len(prefix)
        b = len(prompts)
        message = KVPrefix([layer.keys[:, :, n:].expand(b, -1, -1, -1) for layer in own.layers],
                           [layer.values[:, :, n:].expand(b, -1, -1, -1) for layer in own.layers])
        inputs = bridge.bridged_inputs(message, prompts, with_answer=True)
        got = target.model(**inputs.model_kwargs()).logits
        rows = [prefix + x + list(enc.target_text(p).prompt) + list(enc.target_text(p).answer) for p in prompts]
        want = target.model(**bridge.text_inputs(target, rows).model_kwargs()).logits
    for r, prompt in enumerate(prompts):
        text = enc.target_text(prompt)
        n = len(text.prompt) + len(text.answer)
        torch.testing.assert_close(got[r, -n:], want[r, -n:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("translator", "mode"), KV[::2], ids=["kv_prefix", "c2c"])
def test_gradient_reaches_every_trained_part(random_pair, translator, mode):
    exp = experiment(random_pair, translator, mode)
    from latentbridge.train.steps import StepBuilder

    ctx = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, exp.task.examples("train")[:4])
    assert ctx.soft is None and ctx.message.kind == exp.translator.emits
    exp.objectives["nll"](ctx).backward()
    grads = {name: p.grad for name, p in exp.translator.named_parameters()}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    if translator == "c2c":  # both branches and both gates of every fused layer learn from the first step
        for layer in exp.translator.fusers:
            for kind in ("key", "value"):
                assert grads[f"fusers.{layer}.{kind}_proj_out.weight"].abs().sum() > 0
                assert grads[f"fusers.{layer}.{kind}_gate_logit"].abs() > 0
    else:
        assert grads["queries"].abs().sum() > 0


def test_the_kv_prefix_starts_at_the_size_of_real_keys_and_values(random_pair):
    exp = experiment(random_pair, "kv_prefix", "soft_plus_text")
    _, prompts = batch(exp, 3)
    with torch.no_grad():
        message = exp.bridge.message(prompts)
    rms = exp.translator.config.kv_rms
    assert rms == exp.bridge.target.kv_geometry["kv_rms"]
    for layer, (k, v) in enumerate(zip(message.keys, message.values, strict=True)):
        assert k.shape == (3, exp.translator.config.target_kv_heads, exp.translator.config.k,
                           exp.translator.config.target_head_dim)
        for t, want in ((k, rms[2 * layer]), (v, rms[2 * layer + 1])):
            got = t.float().pow(2).mean(dim=(1, 3)).sqrt()  # per row and virtual token
            torch.testing.assert_close(got, torch.full_like(got, want), rtol=1e-4, atol=1e-6)


def test_gates_anneal_and_are_hard_at_evaluation(random_pair):
    """The reference's schedule, tau = 1 x 0.001^min(step / anneal_steps, 1), and gate: a Gumbel-sigmoid
    draw per row, head and token in training, logit > 0 at evaluation."""
    exp = experiment(random_pair, "c2c", "fused_prompt", "translator.anneal_steps=100")
    c2c = exp.translator
    c2c.set_progress(0, 1000)
    assert c2c.temperature() == pytest.approx(1.0)
    c2c.set_progress(50, 1000)
    assert c2c.temperature() == pytest.approx(0.001 ** 0.5)  # geometric, not linear (0.5005)
    c2c.set_progress(400, 1000)
    assert c2c.temperature() == pytest.approx(0.001)  # past anneal_steps: stays
    default = experiment(random_pair, "c2c", "fused_prompt").translator
    default.set_progress(10, 20)  # no anneal_steps: over the run's steps
    assert default.temperature() == pytest.approx(0.001 ** 0.5)
    layers = sorted(c2c.fusers, key=int)
    with torch.no_grad():
        for t, logit in zip(layers, (2.0, -1.0, 0.5), strict=True):
            c2c.fusers[t].key_gate_logit.fill_(logit)
            c2c.fusers[t].value_gate_logit.fill_(-logit)
    shape = torch.Size([3, 2, 7, 1])
    c2c.eval()
    assert [float(c2c.gate(int(t), "key", shape, None)) for t in layers] == [1.0, 0.0, 1.0]
    assert [float(c2c.gate(int(t), "value", shape, None)) for t in layers] == [0.0, 1.0, 0.0]
    c2c.train()
    c2c.set_progress(0, 1000)  # temperature 1, no noise (no generator): sigmoid(logit)
    torch.testing.assert_close(c2c.gate(0, "key", shape, None), torch.sigmoid(torch.tensor(2.0)))
    drawn = c2c.gate(0, "key", shape, torch.Generator().manual_seed(0))
    assert drawn.shape == shape and len(set(drawn.flatten().tolist())) == drawn.numel()  # per row, head, token
    # annealed: each draw is (nearly) 0 or 1, open where logit + G > 0: with one Gumbel draw (not a
    # logistic one) that is P = 1 - exp(-e^logit), 0.31 for a logit of -1 (sigmoid would say 0.27)
    c2c.set_progress(1000, 1000)
    hard = c2c.gate(1, "key", torch.Size([64, 2, 64, 1]), torch.Generator().manual_seed(0)).detach()
    assert ((hard < 1e-3) | (hard > 1 - 1e-3)).float().mean() > 0.99
    assert float(hard.mean()) == pytest.approx(1 - math.exp(-math.exp(-1.0)), abs=0.02)


def test_message_sizes():
    soft = SoftTokens(torch.zeros(2, 8, 16, dtype=torch.bfloat16))
    assert soft.nbytes() == [8 * 16 * 2] * 2
    prefix = KVPrefix([torch.zeros(2, 3, 4, 5)] * 6, [torch.zeros(2, 3, 4, 5)] * 6)  # 6 layers, float32
    assert prefix.nbytes() == [6 * 2 * 3 * 4 * 5 * 4] * 2
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    fusion = KVFusion([torch.zeros(2, 2, 3, 4)] * 3, [torch.zeros(2, 2, 3, 4)] * 3, mask, [[], []], ["", ""],
                      lambda *a: a[1:3], [None, 0, 2])
    per_token = 2 * (2 * 4 * 4) * 2  # two source layers used, keys and values, 2 heads x 4 wide x 4 bytes
    assert fusion.nbytes() == [2 * per_token, 3 * per_token]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab c1", min_size=1, max_size=4), min_size=1, max_size=8), st.data())
def test_alignment_picks_the_source_token_holding_the_last_character(words, data):
    """Two tokenizations of one text: each receiver token reads the source token that holds its last
    character; with the same tokenization, each token reads itself."""
    text = "".join(words)

    def spans(cuts):
        bounds = [0, *sorted(set(cuts)), len(text)]
        return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]

    positions = st.lists(st.integers(1, max(1, len(text) - 1)), max_size=6)
    receiver, source = spans(data.draw(positions)), spans(data.draw(positions))
    chosen = align(receiver, source, same_text=True)
    assert len(chosen) == len(receiver)
    for (_, b), j in zip(receiver, chosen, strict=True):
        assert source[j][0] <= b - 1 < source[j][1]
    assert align(source, source, same_text=True) == list(range(len(source)))
    special = align([(0, 0), *receiver], [(0, 0), *source], same_text=True)
    assert special[0] == 0 and special[1:] == [j + 1 for j in chosen]


def test_the_recipe_refuses_a_message_the_injection_or_an_objective_cannot_take(random_pair):
    with pytest.raises(ConfigError, match="injection: 'soft_plus_text' does not place the kv_fusion message"):
        make_recipe(random_pair, "translator=c2c")
    with pytest.raises(ConfigError, match="injection: 'fused_prompt' does not place the soft_tokens message"):
        make_recipe(random_pair, "injection=fused_prompt")
    with pytest.raises(ConfigError, match="objectives.prompt_alignment: reads soft_tokens, not the kv_prefix"):
        make_recipe(random_pair, "translator=kv_prefix", "objectives.prompt_alignment.weight=1")
    make_recipe(random_pair, "translator=kv_prefix", "injection=soft_only", "objectives.kl.weight=1")


def test_a_plugin_adds_a_message_kind_without_touching_the_core(random_pair, monkeypatch):
    """The example package's message kind (soft tokens read twice, before and after the prompt), its
    translator and the injection mode that accepts it: registered through the hooks, trained, generated."""
    import importlib.util
    import sys
    import types

    from latentbridge import hookimpl
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import validate_recipe
    from latentbridge.registry.host import Registry

    from .conftest import REPO
    from .helpers import recipe_dict

    path = REPO / "plugins" / "examples" / "latentbridge-l2" / "latentbridge_l2.py"
    spec = importlib.util.spec_from_file_location("latentbridge_l2_in_process", path)
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)  # its dataclasses look their module up
    spec.loader.exec_module(example)
    plugin = types.SimpleNamespace(
        register_translators=hookimpl(lambda register: register(example.EchoLinear)),
        register_injection_modes=hookimpl(lambda register: register(example.SoftAround)),
    )
    registry = Registry.load(autoload=False, extra=[plugin])
    data = recipe_dict(random_pair, "translator=echo_linear", "injection=soft_around")
    with pytest.raises(ConfigError, match="injection: 'soft_plus_text' does not place the soft_echo message"):
        validate_recipe(recipe_dict(random_pair, "translator=echo_linear"), registry)
    exp = Experiment.build(validate_recipe(data, registry), registry)
    from latentbridge.train.steps import StepBuilder

    ctx = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, exp.task.examples("train")[:4])
    assert ctx.message.kind == "soft_echo" and ctx.soft is None
    assert int(ctx.inputs.soft_mask.sum(1)[0]) == 2 * exp.translator.k  # both places hold the soft tokens
    exp.objectives["nll"](ctx).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in exp.translator.parameters())
    _, prompts = batch(exp, 2)
    with torch.no_grad():
        gen = exp.bridge.bridged_inputs(exp.bridge.message(prompts), prompts, with_answer=False)
    assert greedy_generate(exp.bridge.target.model, exp.bridge.target.tokenizer, gen, max_new_tokens=2, eos_ids=set())


@pytest.mark.parametrize(("translator", "mode"), KV[::2], ids=["kv_prefix", "c2c"])
def test_save_load_round_trip_and_the_card_refuses_another_pair(random_pair, tmp_path, translator, mode):
    """A saved key/value translator rebuilds from its folder alone and gives the same message; loaded
    onto the reversed pair, its bridge card refuses it with what differs."""
    from latentbridge.errors import LatentBridgeError
    from latentbridge.io.card import bridge_card, write_card
    from latentbridge.io.weights import load_translator, save_translator

    exp = experiment(random_pair, translator, mode)
    train(exp)
    save_translator(exp.translator, tmp_path / "t")
    write_card(tmp_path / "t", bridge_card(exp))
    again = load_translator(tmp_path / "t")
    _, prompts = batch(exp, 3)
    with torch.no_grad():
        states = exp.bridge.source_states(prompts)
        a = exp.translator.message(states)
        b = again.message(states)
    assert a.kind == b.kind == exp.translator.emits
    for x, y in zip(a.keys, b.keys, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    if translator == "c2c":  # the fusers too: the same fused cache
        with torch.no_grad():
            fa = exp.bridge.bridged_inputs(a, prompts, with_answer=False).cache()
            exp.bridge.translator = again
            fb = exp.bridge.bridged_inputs(b, prompts, with_answer=False).cache()
        for la, lb in zip(next(iter(fa.values())).layers, next(iter(fb.values())).layers, strict=True):
            torch.testing.assert_close(la.keys, lb.keys, rtol=0, atol=0)
    with pytest.raises(LatentBridgeError, match="was trained for .*llama -> .*mistral, not for .*mistral -> .*llama"):
        experiment(random_pair, translator, mode, reverse=True).load_translator(tmp_path / "t")


@pytest.mark.parametrize("pad", [0, 3])
def test_the_kv_prefix_does_not_depend_on_padding(random_pair, pad):
    exp = experiment(random_pair, "kv_prefix", "soft_only")
    _, prompts = batch(exp, 2)
    with torch.no_grad():
        states = exp.bridge.source_states(prompts)
        padded = type(states)(torch.cat([torch.randn(2, pad, states.hidden.shape[2]), states.hidden], 1),
                              torch.cat([torch.zeros(2, pad, dtype=states.mask.dtype), states.mask], 1))
        a, b = exp.translator.message(states), exp.translator.message(padded)
    for x, y in zip(a.keys + a.values, b.keys + b.values, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_several_source_layers_reach_a_translator_that_reads_them(random_pair):
    """models.source_layers: the translator gets exactly those hidden states, mixes them with learned
    weights (which get a gradient), and a recipe asking it of a one-layer translator is refused."""
    exp = experiment(random_pair, "kv_prefix", "soft_plus_text", "models.source_layers=[0, 1, -1]")
    assert exp.translator.config.n_source_layers == 3
    _, prompts = batch(exp, 3)
    states = exp.bridge.source_states(prompts)
    ids, mask = left_pad(exp.bridge.source_rows(prompts), exp.bridge.source.pad_id, exp.bridge.source.device)
    with torch.no_grad():
        hs = exp.bridge.source.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                                     output_hidden_states=True).hidden_states
    for got, want in zip(states.layers, (hs[0], hs[1], hs[-1]), strict=True):
        torch.testing.assert_close(got, want)
    from latentbridge.train.steps import StepBuilder

    ctx = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, exp.task.examples("train")[:4])
    exp.objectives["nll"](ctx).backward()
    assert exp.translator.layer_weights.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="models.source_layers: translator 'linear' reads one layer"):
        make_recipe(random_pair, "models.source_layers=[0, 1]")
    with pytest.raises(ConfigError, match="the source cache keeps one layer"):
        make_recipe(random_pair, "translator=kv_prefix", "models.source_layers=[0, 1]", "cache.source=true")
    from latentbridge.errors import LatentBridgeError

    with pytest.raises(LatentBridgeError, match=r"models.source_layers\[1\]: 9 is out of range"):
        experiment(random_pair, "kv_prefix", "soft_plus_text", "models.source_layers=[0, 9]")


# -- which source position and layer each receiver position reads (review: mutants that survived) --


def same_model(pair, *more):
    """llama -> llama: one tokenizer, the layer map the identity: the source's cache IS the receiver's."""
    return make_experiment({"llama": pair["llama"], "mistral": pair["llama"]}, "translator=c2c", "injection=fused_prompt",
                           "task.shots=1", "task.exemplars=per_item", *more)


def fused_equals_plain(exp, n_rows=5):
    """With the fuser averaging the receiver's cache and the aligned source cache, the logits on the last
    prompt token and the answer equal the target reading its text: every position gathered the source
    position of the same token, at the same layer (a replacement would be blind to a permutation)."""
    bridge = exp.bridge
    _, prompts = batch(exp, n_rows)
    with torch.no_grad():
        message = dataclasses.replace(bridge.message(prompts), fuse=lambda _l, k, v, sk, sv: ((k + sk) / 2, (v + sv) / 2))
        got = bridge.target.model(**bridge.bridged_inputs(message, prompts, with_answer=True).model_kwargs()).logits
        enc = bridge.target_encoder
        rows = [enc.prompt_ids(p) + list(enc.target_text(p).answer) for p in prompts]
        want = bridge.target.model(**bridge.text_inputs(bridge.target, rows).model_kwargs()).logits
    for r, p in enumerate(prompts):
        n = len(enc.target_text(p).answer) + 1
        torch.testing.assert_close(got[r, -n:], want[r, -n:], rtol=1e-5, atol=1e-5)


def test_fusing_the_same_models_own_cache_reads_the_prompt_exactly(random_pair):
    exp = same_model(random_pair)
    assert exp.translator.layer_map == [0, 1]
    fused_equals_plain(exp)


@pytest.fixture
def bos_pair(random_pair, tmp_path):
    """The tiny pair with tokenizers that put <s> first (the session pair's add no special prefix)."""
    import shutil

    from tokenizers import processors
    from transformers import AutoTokenizer

    out = {}
    for name, folder in random_pair.items():
        shutil.copytree(folder, tmp_path / name)
        tok = AutoTokenizer.from_pretrained(tmp_path / name)
        tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                                      special_tokens=[("<s>", tok.bos_token_id)])
        tok.save_pretrained(tmp_path / name)
        out[name] = tmp_path / name
    return out


def test_with_a_bos_the_fusion_lines_up_bos_with_bos(bos_pair):
    exp = same_model(bos_pair)
    assert list(exp.bridge.target_encoder.prefix) == [exp.bridge.target.tokenizer.bos_token_id]
    fused_equals_plain(exp)


@pytest.mark.parametrize("reverse", PAIRS, ids=PAIR_IDS)
def test_with_a_bos_the_kv_prefix_follows_its_cache(bos_pair, reverse):
    test_kv_prefix_of_real_keys_equals_reading_the_text(bos_pair, reverse)
    assert experiment(bos_pair, "kv_prefix", "soft_plus_text", reverse=reverse).bridge.target_encoder.prefix


def test_the_key_fuser_reads_source_keys_and_the_value_fuser_source_values(random_pair):
    exp = experiment(random_pair, "c2c", "fused_prompt")
    train(exp)
    _, prompts = batch(exp, 2)
    c = exp.translator.config
    with torch.no_grad():
        message = exp.bridge.message(prompts)
        layer = next(t for t, s in enumerate(message.layers) if s is not None)
        k = torch.randn(2, c.target_kv_heads, 5, c.target_head_dim)
        v = torch.randn_like(k)
        sk = torch.randn(2, c.source_kv_heads, 5, c.source_head_dim)
        sv = torch.randn_like(sk)
        k0, v0 = message.fuse(layer, k, v, sk, sv)
        k1, v1 = message.fuse(layer, k, v, sk, sv + 1.0)  # only the source's values change
        k2, v2 = message.fuse(layer, k, v, sk + 1.0, sv)  # only the source's keys change
    assert torch.equal(k0, k1) and not torch.allclose(v0, v1)
    assert torch.equal(v0, v2) and not torch.allclose(k0, k2)


@pytest.mark.parametrize("fuser", ["reference", "light"])
def test_the_per_head_weight_is_a_sigmoid(random_pair, fuser):
    exp = experiment(random_pair, "c2c", "fused_prompt", f"translator.fuser={fuser}")
    layer = next(iter(exp.translator.fusers.values()))
    c = exp.translator.config
    layer.eval()
    with torch.no_grad():
        projection, weight = layer.branch("key", torch.randn(3, c.target_kv_heads, 7, c.target_head_dim),
                                          torch.randn(3, c.source_kv_heads, 7, c.source_head_dim))
    assert projection.shape == (3, c.target_kv_heads, 7, c.target_head_dim)
    assert weight.shape == (3, c.target_kv_heads, 7, 1)
    assert (weight > 0).all() and (weight < 1).all() and weight.std() > 1e-3


@pytest.mark.parametrize(("translator", "mode"), KV[::2], ids=["kv_prefix", "c2c"])
def test_kv_messages_in_bfloat16(random_pair, translator, mode):
    """The cache the target reads is in its own dtype (a float32 translator under a bf16 target)."""
    exp = experiment(random_pair, translator, mode, "models.dtype=bfloat16")
    bridge = exp.bridge
    _, prompts = batch(exp, 3)
    with torch.no_grad():
        inputs = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=False)
        cache = next(iter(inputs.cache().values()))
        assert all(layer.keys.dtype == layer.values.dtype == torch.bfloat16 for layer in cache.layers)
        assert torch.isfinite(bridge.target.model(**inputs.model_kwargs()).logits.float()).all()


def test_a_special_token_anywhere_reads_the_sources_first_token():
    assert align([(0, 2), (2, 4), (0, 0), (4, 5)], [(0, 2), (2, 4), (4, 5)], True) == [0, 1, 0, 2]


def test_fusion_with_an_answer_context_fuses_the_prompt_only(random_pair):
    """Other answers read after an unsupervised context (format_penalty's use): the context is input, not cache."""
    exp = experiment(random_pair, "c2c", "fused_prompt")
    bridge = exp.bridge
    _, prompts = batch(exp, 2)
    with torch.no_grad():
        message = bridge.message(prompts)
        inputs = bridge.bridged_inputs(message, prompts, with_answer=True, answers=[([5, 6], [7, 8])] * 2)
    prompt_lengths = [len(bridge.target_encoder.prompt_ids(p)) - 1 for p in prompts]
    assert next(iter(inputs.cache().values())).get_seq_length() == max(prompt_lengths)
    assert inputs.labels[:, -2:].tolist() == [[7, 8]] * 2  # the answer, supervised
    assert (inputs.labels[:, :-2] == -100).all()  # the last prompt token and the context, read only
    assert inputs.inputs_embeds.shape[1] == 1 + 2 + 2


def test_the_generation_view_is_refused_for_a_cache_fusion(random_pair):
    with pytest.raises(ConfigError, match="source.view: 'generation' with translator 'c2c'"):
        make_recipe(random_pair, "translator=c2c", "injection=fused_prompt", "source.view=generation")


@pytest.mark.parametrize("pair", ["random_pair", "bos_pair"])
def test_learned_layers_reach_only_the_chosen_share_and_count_its_bytes(pair, request):
    """``layers: learned``: ceil(share x L) layers read the message. A change to the keys and values of a
    layer left out changes nothing the target computes; the same change at a chosen layer does (the
    control); the bytes are those of the chosen layers; the layer logits get a gradient. With a target
    whose special prefix (BOS) comes first in the cache, the hidden positions are the message's, not the
    BOS."""
    exp = experiment(request.getfixturevalue(pair), "kv_prefix", "soft_plus_text", "translator.layers=learned",
                     "translator.layer_share=0.5")
    assert bool(exp.bridge.target_encoder.prefix) == (pair == "bos_pair")
    bridge, translator = exp.bridge, exp.translator
    _, prompts = batch(exp, 4)
    n_layers = translator.config.target_layers
    chosen = translator.chosen_layers()
    assert len(chosen) == -(-n_layers // 2) and len(chosen) < n_layers
    left_out = next(i for i in range(n_layers) if i not in chosen)
    with torch.no_grad():
        message = bridge.message(prompts)
        assert message.layers == chosen
        whole = dataclasses.replace(message, layers=None)
        assert message.nbytes() == [n * len(chosen) // n_layers for n in whole.nbytes()]

        def logits(m):
            return bridge.bridged_inputs(m, prompts, with_answer=True).forward(bridge.target.model).logits

        def noisy(layer):
            keys = [k + torch.randn_like(k) * 3 if i == layer else k for i, k in enumerate(message.keys)]
            values = [v + torch.randn_like(v) * 3 if i == layer else v for i, v in enumerate(message.values)]
            return dataclasses.replace(message, keys=keys, values=values)

        base = logits(message)
        torch.testing.assert_close(logits(noisy(left_out)), base)
        assert not torch.allclose(logits(noisy(chosen[0])), base, atol=1e-3)
        # every layer reading it (the same message with layers=None) reads something else than the chosen share
        assert not torch.allclose(logits(whole), base, atol=1e-3)
    translator.train()
    loss = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=True).forward(
        bridge.target.model).logits.float().pow(2).mean()
    loss.backward()
    assert translator.layer_logits.grad is not None and translator.layer_logits.grad[chosen].abs().sum() > 0
    translator.eval()


@pytest.mark.parametrize("reverse", PAIRS, ids=PAIR_IDS)
def test_retokenize_gives_one_sharer_token_per_receiver_token(random_pair, reverse):
    """The authors' alignment: each receiver token decoded alone and re-encoded by the sharer, its first
    (or longest) piece kept; specials to their counterparts."""
    from latentbridge.bridge.retokenize import retokenize

    exp = experiment(random_pair, "c2c", "fused_prompt", reverse=reverse)
    receiver, sharer = exp.bridge.target.tokenizer, exp.bridge.source.tokenizer
    _, prompts = batch(exp, 2)
    ids = exp.bridge.target_encoder.prompt_ids(prompts[0])
    first, longest = retokenize(receiver, sharer, ids, "first"), retokenize(receiver, sharer, ids, "longest")
    assert len(first) == len(longest) == len(ids)
    memo: dict[int, int] = {}
    assert retokenize(receiver, sharer, ids, "first", memo) == first and set(memo) == set(ids)
    memo[ids[-1]] = -7  # a remembered mapping is what the next call reads
    assert retokenize(receiver, sharer, ids[-1:], "first", memo) == [-7]
    split = 0
    for token, f, g in zip(ids, first, longest, strict=True):
        if token in receiver.all_special_ids:
            continue
        text = receiver.decode([token], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        pieces = sharer(text, add_special_tokens=False)["input_ids"]
        if not pieces:  # a text the sharer encodes to nothing (a lone space piece): its unknown token, or 0
            assert f == g == (sharer.unk_token_id if sharer.unk_token_id is not None else 0)
            continue
        assert f == pieces[0] and g in pieces
        if len(pieces) > 1:
            split += 1
            size = [len(sharer.decode([p], skip_special_tokens=False, clean_up_tokenization_spaces=False))
                    for p in pieces]
            assert g == pieces[size.index(max(size))]
    assert split > 0  # the two tokenizers differ: some receiver tokens are several sharer tokens
    if receiver.bos_token_id is not None and ids[0] == receiver.bos_token_id and sharer.bos_token_id is not None:
        assert first[0] == sharer.bos_token_id


@pytest.mark.parametrize("special", ["fused", "own"])
def test_with_retokenize_the_source_reads_the_targets_tokens_and_every_token_is_fused(bos_pair, special):
    """The sharer's cache is computed on the receiver's tokens re-encoded, at the receiver's positions (one
    entry per receiver token); every prompt token but the last is fused, the receiver's special token (BOS)
    included, as the authors' unaligned path fuses it (``special_tokens: own``: the BOS keeps its own cache);
    alignment: last_character reads the sharer's own tokenization."""
    from latentbridge.bridge.retokenize import retokenize

    exp = experiment(bos_pair, "c2c", "fused_prompt", f"translator.special_tokens={special}", reverse=True)
    bridge = exp.bridge
    assert bridge.target_encoder.prefix  # the target has a BOS
    _, prompts = batch(exp, 3)
    with torch.no_grad():
        states = bridge.source_states(prompts)
        rows = [retokenize(bridge.target.tokenizer, bridge.source.tokenizer, bridge.target_encoder.prompt_ids(p))
                for p in prompts]
        assert states.mask.sum(1).tolist() == [len(bridge.target_encoder.prompt_ids(p)) for p in prompts]
        for r, row in enumerate(rows):
            alone = bridge.source.model(input_ids=torch.tensor([row]), use_cache=True)
            keys = cache_of(alone).layers[-1].keys[0]
            torch.testing.assert_close(states.kv[-1][0][r][:, states.mask[r].bool()], keys, atol=1e-5, rtol=1e-5)
        for fuser in exp.translator.fusers.values():  # open every gate: every text position changes
            fuser.key_gate_logit.fill_(1.0)
            fuser.value_gate_logit.fill_(1.0)
        exp.translator.eval()
        fused = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=False)
        cache = next(iter(fused.cache().values()))
        reads = [bridge.target_encoder.prompt_ids(p)[:-1] for p in prompts]
        ids, mask = left_pad(reads, bridge.target.pad_id, bridge.target.device)
        own = cache_of(bridge.target.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                                           use_cache=True))
        n_prefix = len(bridge.target_encoder.prefix)
        for r, read in enumerate(reads):
            start = ids.shape[1] - len(read)
            for layer in range(len(cache.layers)):
                changed = (cache.layers[layer].keys[r] - own.layers[layer].keys[r]).abs().amax(dim=(0, 2)) > 1e-6
                assert changed[start : start + n_prefix].all() == (special == "fused")  # the BOS: its own if asked
                assert changed[start + n_prefix :].all()
    other = experiment(bos_pair, "c2c", "fused_prompt", "translator.alignment=last_character", reverse=True)
    with torch.no_grad():
        own_rows = other.bridge.source_rows(prompts)
        assert other.bridge.source_states(prompts).mask.sum(1).tolist() == [len(r) for r in own_rows]
        assert [len(r) for r in own_rows] != [len(r) for r in rows]


def test_a_plugin_adds_a_key_value_message_kind_with_public_names_only(random_pair, monkeypatch):
    """The example package's ``kv_echo``: k virtual keys and values per target layer, laid out through
    ``bridge.layout.kv_prefix`` by its own ``target_inputs``, with its translator (geometry from
    ``KVGeometryConfig``); its layout family (``cache_prefix``) lets the built-in ``soft_plus_text`` and
    ``soft_only`` place it, not ``fused_prompt``. Registered, trained one step, and read as a cache (a
    message holding the target's own cache of a text reads as that text)."""
    import importlib.util
    import sys
    import types

    from latentbridge import hookimpl
    from latentbridge.bridge.build import Experiment
    from latentbridge.config.recipe import validate_recipe
    from latentbridge.registry.host import Registry

    from .conftest import REPO
    from .helpers import recipe_dict

    path = REPO / "plugins" / "examples" / "latentbridge-l2" / "latentbridge_l2.py"
    spec = importlib.util.spec_from_file_location("latentbridge_l2_kv", path)
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)
    spec.loader.exec_module(example)
    plugin = types.SimpleNamespace(register_translators=hookimpl(lambda register: register(example.EchoKV)))
    registry = Registry.load(autoload=True, extra=[plugin])
    with pytest.raises(ConfigError, match="'fused_prompt' does not place the kv_echo message"):
        validate_recipe(recipe_dict(random_pair, "translator=echo_kv", "injection=fused_prompt"), registry)
    validate_recipe(recipe_dict(random_pair, "translator=echo_kv", "injection=soft_only"), registry)
    data = recipe_dict(random_pair, "translator=echo_kv", "translator.k=2", "injection=soft_plus_text",
                       "task.shots=1", reverse=True)  # the target has a BOS: the cache follows it
    exp = Experiment.build(validate_recipe(data, registry), registry)
    c = exp.translator.config
    assert (c.target_layers, c.target_kv_heads, c.target_head_dim) == tuple(
        exp.bridge.target.kv_geometry[f] for f in ("layers", "kv_heads", "head_dim"))
    from latentbridge.train.steps import StepBuilder

    ctx = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, exp.task.examples("train")[:4])
    assert ctx.message.kind == "kv_echo" and ctx.message.nbytes()[0] > 0
    exp.objectives["nll"](ctx).backward()
    assert exp.translator.out.weight.grad.abs().sum() > 0
    bridge, target = exp.bridge, exp.bridge.target
    _, prompts = batch(exp, 3)
    texts = [bridge.target_encoder.target_text(p) for p in prompts]
    words = target.tokenizer(" seven apples", add_special_tokens=False)["input_ids"]
    prefix = list(texts[0].prefix)
    with torch.no_grad():
        own = cache_of(target.model(input_ids=torch.tensor([prefix + words]), use_cache=True))
        keys = [layer.keys[..., len(prefix):, :].expand(3, -1, -1, -1) for layer in own.layers]
        values = [layer.values[..., len(prefix):, :].expand(3, -1, -1, -1) for layer in own.layers]
        inputs = bridge.bridged_inputs(example.KVEcho(keys, values), prompts, with_answer=True)
        logits = inputs.forward(target.model).logits
        for r, text in enumerate(texts):
            ids = [*prefix, *words, *text.prompt, *text.answer]
            alone = target.model(input_ids=torch.tensor([ids])).logits[0]
            supervised = (inputs.labels[r] != -100).nonzero().flatten()
            torch.testing.assert_close(logits[r, supervised - 1], alone[len(ids) - len(text.answer) - 1 : -1],
                                       atol=1e-4, rtol=1e-4)


def test_a_message_kind_names_a_known_layout_family():
    from latentbridge.api.messages import LAYOUTS, Message, layout_of

    assert [layout_of(k) for k in ("soft_tokens", "kv_prefix", "kv_fusion", "kv_share", "activation")] == \
        ["soft_slot", "cache_prefix", "fused_prompt", "cache_before", "patched_prompt"]
    assert set(LAYOUTS) == {"soft_slot", "cache_prefix", "fused_prompt", "cache_before", "patched_prompt"}
    with pytest.raises(ValueError, match="layout must be one of"):
        type("Odd", (Message,), {"kind": "odd", "layout": "soft_slots"})
