"""Tiny random-init Llama/Mistral pair with locally trained tokenizers, built in seconds (never committed).

For unit tests that need real transformers models but not competent ones. Mismatched on purpose, like
the real pair: different tokenizers (byte-level BPE vs Unigram), widths, depths and RoPE bases.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def corpus() -> list[str]:
    from latentbridge.zoo.arith import generate_splits

    train, _ = generate_splits(seed=123, n_train=400, n_test=10)
    return [f"Question: {e['question']}\nAnswer: {e['answer']}" for e in train]


def bpe_tokenizer(texts: list[str], vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def unigram_tokenizer(texts: list[str], vocab: int) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def save_tokenizer(tok: Tokenizer, folder: Path) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    return fast


def build_pair(root: Path) -> dict[str, Path]:
    """Write ``root/llama`` and ``root/mistral`` (config, safetensors, tokenizer); return their paths."""
    texts = corpus()
    torch.manual_seed(0)
    out = {}
    specs = [
        ("llama", bpe_tokenizer(texts, 300), LlamaConfig, LlamaForCausalLM,
         dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 500000.0})),
        ("mistral", unigram_tokenizer(texts, 250), MistralConfig, MistralForCausalLM,
         dict(hidden_size=24, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
              num_key_value_heads=1, sliding_window=None,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    ]
    for name, tok, config_cls, model_cls, arch in specs:
        folder = root / name
        fast = save_tokenizer(tok, folder)
        config = config_cls(
            vocab_size=len(fast), max_position_embeddings=512, pad_token_id=fast.pad_token_id,
            bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=True, **arch,
        )
        model_cls(config).save_pretrained(folder)
        out[name] = folder
    return out
