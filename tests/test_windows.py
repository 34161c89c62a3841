"""Sliding windows measured in positions (latentbridge.bridge.windows): the mask's rule, against a
brute-force reading of it and against transformers' own masks where slots and positions agree."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentbridge.bridge.windows import allowed_keys


def brute(mask: list[list[int]], q_len: int, window: int | None) -> list[list[list[bool]]]:
    out = []
    for row in mask:
        kv = len(row)
        pos = [sum(row[: j + 1]) - 1 for j in range(kv)]
        rows = []
        for q in range(kv - q_len, kv):
            if not row[q]:
                rows.append([k == q for k in range(kv)])
                continue
            rows.append([bool(row[k]) and k <= q and (window is None or pos[q] - pos[k] < window) for k in range(kv)])
        out.append(rows)
    return out


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_rule_is_real_keys_not_after_the_query_within_window_positions(data):
    kv = data.draw(st.integers(1, 12))
    b = data.draw(st.integers(1, 3))
    mask = [data.draw(st.lists(st.integers(0, 1), min_size=kv, max_size=kv)) for _ in range(b)]
    q_len = data.draw(st.integers(1, kv))
    window = data.draw(st.one_of(st.none(), st.integers(1, 6)))
    got = allowed_keys(torch.tensor(mask), q_len, window)
    assert got.tolist() == brute(mask, q_len, window)


def test_padding_inside_a_row_does_not_count_against_the_window():
    """``[a][pad][pad][b][c]`` with a window of 3: ``c`` sees ``a`` (two positions back), as the row
    ``[a][b][c]`` would; counted in slots it would not."""
    allowed = allowed_keys(torch.tensor([[1, 0, 0, 1, 1]]), 1, 3)
    assert allowed[0, 0].tolist() == [True, False, False, True, True]
    assert allowed_keys(torch.tensor([[1, 1, 1, 1]]), 1, 3)[0, 0].tolist() == [False, True, True, True]


def test_plain_left_padding_gives_transformers_own_sliding_mask():
    from transformers import DynamicCache, MistralConfig
    from transformers.masking_utils import create_sliding_window_causal_mask

    config = MistralConfig(sliding_window=3, hidden_size=8, num_attention_heads=2, num_key_value_heads=1,
                           intermediate_size=8, num_hidden_layers=1, vocab_size=10)
    config._attn_implementation = "sdpa"
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1]])
    theirs = create_sliding_window_causal_mask(config, torch.zeros(3, 7, 8), mask, DynamicCache(),
                                               allow_is_causal_skip=False)
    ours = allowed_keys(mask, 7, 3)
    real = mask.bool()[:, :, None] & mask.bool()[:, None, :]  # what a padding query sees is nobody's business
    assert torch.equal(theirs[:, 0] & real, ours & real)


def test_another_attention_implementation_is_refused_in_one_line():
    import pytest
    from transformers import MistralConfig, MistralForCausalLM

    from latentbridge.bridge.windows import install_position_windows
    from latentbridge.errors import LatentBridgeError

    config = MistralConfig(sliding_window=3, hidden_size=8, num_attention_heads=2, num_key_value_heads=1,
                           intermediate_size=8, num_hidden_layers=1, vocab_size=10)
    model = MistralForCausalLM(config)
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(LatentBridgeError, match="attention implementation 'flex_attention' with a sliding window"):
        install_position_windows(model, 3, "past_key_values")


def _tiny_mistral():
    from transformers import MistralConfig, MistralForCausalLM

    from latentbridge.bridge.models import _cache_argument
    from latentbridge.bridge.windows import install_position_windows

    config = MistralConfig(sliding_window=3, hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
                           intermediate_size=16, num_hidden_layers=2, vocab_size=20)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = MistralForCausalLM(config).eval()
    install_position_windows(model, 3, _cache_argument(type(model)))
    return model


def test_every_pass_gets_a_plain_cache_and_a_padded_row_reads_as_alone():
    """A pass without a mask still gets a plain cache (every slot, nothing dropped), and a row with padding
    inside it, continued on that cache, reads what it reads without the padding."""
    from latentbridge.bridge.models import cache_of, with_cache

    model = _tiny_mistral()
    with torch.no_grad():
        prefix = cache_of(model(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6]]), use_cache=True))  # no mask
        assert not any(prefix.is_sliding) and prefix.get_seq_length() == 6
        alone = model(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])).logits[0, -2:]
        mask = torch.tensor([[1] * 6 + [0, 0] + [1, 1]])  # two padding slots between the cache and the text
        pad = cache_of(model(input_ids=torch.tensor([[0, 0]]), attention_mask=mask[:, :8], use_cache=True,
                             position_ids=torch.tensor([[0, 0]]), **with_cache(model, prefix)))
        text = model(input_ids=torch.tensor([[7, 8]]), attention_mask=mask, position_ids=torch.tensor([[6, 7]]),
                     use_cache=True, **with_cache(model, pad)).logits[0]
    torch.testing.assert_close(text, alone, atol=1e-5, rtol=1e-5)


def test_what_the_hook_cannot_read_is_refused():
    import pytest
    from transformers import DynamicCache, MistralConfig

    from latentbridge.bridge.models import with_cache
    from latentbridge.errors import LatentBridgeError

    model = _tiny_mistral()
    ids, mask = torch.tensor([[1, 2, 3]]), torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(LatentBridgeError, match="as a keyword"):
        model(ids, mask)
    sliding = DynamicCache(config=MistralConfig(sliding_window=3, num_hidden_layers=2, hidden_size=16,
                                                num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(LatentBridgeError, match="padding inside a row"):
        model(input_ids=ids, attention_mask=torch.tensor([[1, 0, 1]]), use_cache=True, **with_cache(model, sliding))
