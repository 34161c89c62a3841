"""c2c's ``include_response`` (the authors' option): every token from the prompt's last on writes a fused entry.

The reference (thu-nics/C2C ``RosettaModel.register_hooks``), per block of new tokens: the receiver's own
keys and values come from its *unfused* cache continued with the block, the sharer's from its cache
continued with the block, the projector fuses them, and the receiver's attention reads the fused entries in
place of those it computed (every layer: the unfused layers get the unfused twin's). Here the same is
computed the slow way, from single full passes with no cache and no padding, and compared with what the
bridge writes to the cache; the conformance suite (``c2c_response`` in tests/test_kv_conformance.py) checks
padding, the generation layout and a zero fuser on every family.
"""

from __future__ import annotations

import pytest
import torch

from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.models import cache_of, with_cache
from latentbridge.bridge.response import ReplacingCache
from latentbridge.bridge.retokenize import retokenize
from latentbridge.config.schema import ConfigError
from latentbridge.registry.host import get_registry

from .families import NAMES
from .test_kv_conformance import experiment_for, prompts_of


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def _full_kv(model, ids):
    out = model(input_ids=torch.tensor([ids]), use_cache=True)
    return [(layer.keys, layer.values) for layer in cache_of(out).layers]


@pytest.mark.parametrize("name", [NAMES[0], "mistral"])
def test_the_cache_holds_the_reference_fusion_of_prompt_and_response(families, name):
    exp = experiment_for(families, name, "target", "c2c_response", "float32")
    bridge, target, source = exp.bridge, exp.bridge.target, exp.bridge.source
    prompt = prompts_of(exp, 2)[1]
    text = bridge.target_encoder.target_text(prompt)
    read, answer = [*text.prefix, *text.prompt], list(text.answer)
    ids = read + answer
    with torch.no_grad():
        message = bridge.message([prompt])
        inputs = bridge.bridged_inputs(message, [prompt], with_answer=True)
        written = cache_of(inputs.forward(target.model, use_cache=True))
        # the slow way: the receiver alone over everything (unfused), the sharer over everything re-encoded
        own = _full_kv(target.model, ids)
        shared = _full_kv(source.model, retokenize(target.tokenizer, source.tokenizer, ids,
                                                   exp.translator.retokenize))
        checked = 0
        for layer, entry in enumerate(written.layers):
            s = exp.translator.layer_map[layer]
            assert s is not None  # last_aligned fuses every layer
            ok, ov = own[layer]
            fk, fv = message.fuse(layer, ok, ov, *shared[s])
            # the prompt but its last token: fused one for one, the special tokens too (the authors')
            n = len(read) - 1
            torch.testing.assert_close(entry.keys[:, :, :n], fk[:, :, :n])
            torch.testing.assert_close(entry.values[:, :, :n], fv[:, :, :n])
            # the prompt's last token and the answer: fused from the unfused twin and the sharer
            torch.testing.assert_close(entry.keys[:, :, n:], fk[:, :, n:], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(entry.values[:, :, n:], fv[:, :, n:], atol=1e-5, rtol=1e-4)
            assert (fk[:, :, n:] - ok[:, :, n:]).abs().max() > 1e-4  # the fusion changes what is written
            checked += 1
        assert checked == len(own)


def test_generation_writes_the_fused_response_at_every_step(families):
    """greedy_generate's cache after decoding: each generated token's entry is the reference fusion."""
    exp = experiment_for(families, NAMES[0], "target", "c2c_response", "float32")
    bridge, target, source = exp.bridge, exp.bridge.target, exp.bridge.source
    prompt = prompts_of(exp, 1)[0]
    text = bridge.target_encoder.target_text(prompt)
    read = [*text.prefix, *text.prompt]
    seen = {}
    real_update = ReplacingCache.update

    def spy(self, k, v, layer, *args, **kwargs):
        keys, values = real_update(self, k, v, layer, *args, **kwargs)
        seen[layer] = (keys, values)
        return keys, values

    with torch.no_grad():
        message = bridge.message([prompt])
        inputs = bridge.bridged_inputs(message, [prompt], with_answer=False)
        ReplacingCache.update = spy
        try:
            (out,) = greedy_generate(target.model, target.tokenizer, inputs, max_new_tokens=4, eos_ids=set())
        finally:
            ReplacingCache.update = real_update
        assert len(out.token_ids) == 4
        # every generated token was fed back (the loop feeds what it chose until the length runs out)
        ids = read + out.token_ids
        own = _full_kv(target.model, ids)
        shared = _full_kv(source.model, retokenize(target.tokenizer, source.tokenizer, ids, exp.translator.retokenize))
        for layer, (keys, values) in seen.items():
            fk, fv = message.fuse(layer, *own[layer], *shared[exp.translator.layer_map[layer]])
            n = len(read) - 1
            torch.testing.assert_close(keys[:, :, n:], fk[:, :, n:], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(values[:, :, n:], fv[:, :, n:], atol=1e-5, rtol=1e-4)


def test_the_replacing_cache_is_what_attention_reads(families):
    """Replacing the new tokens' entries by the model's own changes nothing; by others', the logits change
    and the cache holds what was given."""
    exp = experiment_for(families, NAMES[0], "target", "c2c_response", "float32")
    model = exp.bridge.target.model
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        own = _full_kv(model, ids[0].tolist())
        other = _full_kv(model, [1, 8, 2, 11, 6, 4])
        for given, same in ((own, True), (other, False)):
            cache = ReplacingCache()
            cache.pending = dict(enumerate(given))
            logits = model(input_ids=ids, use_cache=True, **with_cache(model, cache)).logits
            assert torch.allclose(logits, plain, atol=1e-5) == same
            assert not cache.pending  # each consumed once
            torch.testing.assert_close(cache.layers[0].keys, given[0][0])


def test_include_response_needs_the_authors_alignment():
    registry = get_registry()
    assert registry.config_for("translator", "c2c", {"include_response": True}).include_response
    with pytest.raises(ConfigError, match="include_response: needs alignment: retokenize"):
        registry.config_for("translator", "c2c", {"include_response": True, "alignment": "last_character"})
