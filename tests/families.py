"""Tiny random models of the architecture families latentbridge claims to support, built in seconds.

Each builder writes a Hugging Face folder the way the family's real checkpoints are laid out: the
config through the family's transformers config class, random weights with ``save_pretrained`` (two
families sharded, with ``model.safetensors.index.json``), a ``generation_config.json`` with the family's
end-of-turn ids, and a fast tokenizer trained in a fraction of a second on the arith corpus (see
``tiny_models.corpus``), built by the family's own transformers tokenizer class from the trained
vocabulary and merges (so it is what that class makes of a real folder: pre-tokenizer, BOS added or
not, special tokens where the family puts them):

============  ==================  ====================================  ============  =======================
family        tokenizer_class     BOS / EOS (generation_config list)    pad           notes
============  ==================  ====================================  ============  =======================
llama3        TokenizersBackend   <|begin_of_text|> added by the post-  none          chat template; 5 shards;
                                  processor / <|end_of_text|>                         llama3 rope scaling
                                  (+ <|eom_id|>, <|eot_id|>)
mistral       LlamaTokenizer      <s> added / </s>                      none          sliding_window 16
qwen2         Qwen2Tokenizer      none / <|im_end|> (+ <|endoftext|>)   <|endoftext|> tied; padded vocab;
                                                                                      ChatML; window set
                                                                                      but switched off
qwen3         Qwen2Tokenizer      none / <|im_end|> (+ <|endoftext|>)   <|endoftext|> heads * head_dim !=
                                                                                      hidden; q/k norms
gemma2        GemmaTokenizer      <bos> added / <eos> (+ <end_of_turn>) <pad>         tied; sliding 16 +
                                                                                      global; softcapping
gemma3_text   GemmaTokenizer      as gemma2                             <pad>         Gemma3ForCausalLM
gemma3        GemmaTokenizer      as gemma2                             <pad>         model_type gemma3:
                                                                                      ...ForConditional-
                                                                                      Generation, SigLIP
                                                                                      tower; 2 shards
phi3          LlamaTokenizer      <s> added / <|endoftext|> (+ <|end|>, <|endoftext|> fused qkv_proj; padded
                                  <|assistant|>)                                      vocab; pad == eos
gpt2          GPT2Tokenizer       <|endoftext|> = bos = eos, not added  none          tied; learned positions
gpt_neox      GPTNeoXTokenizer    <|endoftext|> = bos = eos, not added  none          rotary on 25% of each
                                                                                      head; padded vocab
olmo2         GPT2Tokenizer       <|endoftext|> = bos = eos, not added  <|pad|>       chat template opens
                                                                                      with the BOS
============  ==================  ====================================  ============  =======================

Chat templates (llama3, qwen2/3, gemma*, phi3, olmo2) are written like the real instruct models' (Llama-3
and Gemma trim the message). Widths are 32 (64 for llama3), 2 layers. Never committed: the test session
builds them (the ``families`` fixture of ``conftest.py``) in pytest's temporary directory.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from .tiny_models import corpus

# --------------------------------------------------------------------------------------------------
# what each family is, as the tests need to know it
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer_class: str  # tokenizer_class in tokenizer_config.json
    model_class: str  # what AutoModelForCausalLM must load
    bos_added: bool  # the tokenizer puts its BOS in front of every encoded text
    pad: str | None  # the tokenizer's pad token (None: it has none, as Llama-3, Mistral and GPT-2)
    eos: str
    eos_list: tuple[str, ...]  # generation_config.eos_token_id, as tokens
    chat: bool  # the tokenizer has a chat template
    tied: bool
    sharded: bool
    rotary: bool
    sliding_window: int | None  # the window of its sliding layers (None: none)
    padded_vocab: bool = False  # the embedding has more rows than the tokenizer has tokens
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


WINDOW = 16  # sliding window of the sliding-window families: a 1-shot arith prompt is longer than this
SHARD = "100KB"  # max_shard_size of the sharded families

# --------------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------------

QWEN_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTES = [f"<0x{i:02X}>" for i in range(256)]  # SentencePiece byte-fallback pieces (Llama-2, Mistral, Gemma)
SP_ALPHABET = sorted(set(string.ascii_letters + string.digits + string.punctuation)) + ["▁"]


def _train(pipeline: str, texts: list[str], vocab: int, front: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a BPE under one family pipeline; return its vocabulary (``front`` tokens first) and merges."""
    sp = pipeline in ("sp", "gemma")
    tok = Tokenizer(models.BPE(byte_fallback=sp, unk_token="<unk>" if sp else None))
    # SentencePiece pieces never cross a word boundary (split_by_whitespace): trained split at each ▁, though
    # transformers' rebuilt tokenizers (LlamaTokenizer, GemmaTokenizer) apply the merges to the whole text
    if pipeline == "sp":  # Llama-2 / Mistral / Phi-3
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    elif pipeline == "gemma":  # Gemma: spaces become ▁, no prefix space
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    elif pipeline in ("qwen", "llama3"):
        regex = QWEN_REGEX if pipeline == "qwen" else LLAMA3_REGEX
        tok.normalizer = normalizers.NFC() if pipeline == "qwen" else None
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(regex), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:  # GPT-2 byte level (its own regex); GPT-NeoX adds NFC
        tok.normalizer = normalizers.NFC() if pipeline == "neox" else None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = SP_ALPHABET if sp else pre_tokenizers.ByteLevel.alphabet()
    specials = front + (BYTES if sp else [])
    trainer = trainers.BpeTrainer(vocab_size=vocab + len(specials), special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]
    return dict(model["vocab"]), merges


def _append(vocab: dict[str, int], tokens: list[str]) -> dict[str, int]:
    out = dict(vocab)
    for t in tokens:
        out.setdefault(t, len(out))
    return out


def _mark_special(tok: Any, tokens: list[str]) -> None:
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)


LLAMA3_CHAT = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
               "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
               "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
CHATML = ("{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system\n"
          "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
          "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA_CHAT = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}"
              "\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
              "{% endif %}")
PHI3_CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}")
OLMO2_CHAT = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
              "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def tokenizer_llama3(texts: list[str]) -> Any:
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _train("llama3", texts, 300, [])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>"]
    vocab = _append(vocab, specials)  # Llama-3's specials follow the 128,000 ordinary tokens
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    bos = vocab["<|begin_of_text|>"]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   chat_template=LLAMA3_CHAT, model_max_length=512)


def tokenizer_sp(texts: list[str], end_specials: list[str], pad: str | None, chat: str | None, eos: str = "</s>") -> Any:
    """Llama-2-style SentencePiece BPE (Mistral, Phi-3): <unk> <s> </s> first, then the byte pieces."""
    from transformers import LlamaTokenizer

    vocab, merges = _train("sp", texts, 200, ["<unk>", "<s>", "</s>"])
    vocab = _append(vocab, end_specials)  # Phi-3's chat tokens follow the 32,000 SentencePiece ones
    extra = {"pad_token": pad} if pad else {}
    tok = LlamaTokenizer(vocab=vocab, merges=merges, unk_token="<unk>", bos_token="<s>", eos_token=eos,
                         add_bos_token=True, add_eos_token=False, legacy=False, chat_template=chat,
                         model_max_length=512, **extra)
    _mark_special(tok, end_specials)
    return tok


def tokenizer_qwen(texts: list[str]) -> Any:
    from transformers import Qwen2Tokenizer

    vocab, merges = _train("qwen", texts, 300, [])
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = _append(vocab, specials)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", chat_template=CHATML, model_max_length=512)
    _mark_special(tok, specials)
    return tok


def tokenizer_gemma(texts: list[str], multimodal: bool) -> Any:
    from transformers import GemmaTokenizer

    vocab, merges = _train("gemma", texts, 200, ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])
    turns = ["<start_of_turn>", "<end_of_turn>"]
    images = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"] if multimodal else []
    vocab = _append(vocab, turns + images)
    tok = GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False,
                         chat_template=GEMMA_CHAT, model_max_length=512)
    _mark_special(tok, turns + images)
    return tok


def tokenizer_gpt2(texts: list[str], pipeline: str, front: list[str], end: list[str], pad: str | None,
                   chat: str | None = None) -> Any:
    """GPT-2 byte level (GPT-2, OLMo-2) or GPT-NeoX; <|endoftext|> is BOS, EOS and UNK, never added."""
    from transformers import GPT2Tokenizer, GPTNeoXTokenizer

    vocab, merges = _train(pipeline, texts, 300, front)
    vocab = _append(vocab, end)
    cls = GPTNeoXTokenizer if pipeline == "neox" else GPT2Tokenizer
    tok = cls(vocab=vocab, merges=merges, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
              eos_token="<|endoftext|>", pad_token=pad, add_bos_token=False, chat_template=chat, model_max_length=512)
    _mark_special(tok, front + end)
    return tok


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------


def _ids(tok: Any, tokens: tuple[str, ...]) -> list[int]:
    vocab = tok.get_vocab()
    missing = [t for t in tokens if t not in vocab]
    assert not missing, f"not in the vocabulary: {missing}"
    return [vocab[t] for t in tokens]


def _vocab(tok: Any, padded: bool) -> int:
    n = len(tok)
    return -(-n // 64) * 64 if padded else n  # Qwen2, Phi-3, GPT-NeoX and OLMo-2 round their vocab up


def _save(folder: Path, fam: Family, tok: Any, config: Any, model_cls: type) -> None:
    from transformers import GenerationConfig

    tok.save_pretrained(folder)
    model = model_cls(config)
    eos = _ids(tok, fam.eos_list)
    bos = tok.bos_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tok.pad_token_id,
    )
    kwargs = {"max_shard_size": SHARD} if fam.sharded else {}
    model.save_pretrained(folder, **kwargs)


def _common(tok: Any, fam: Family) -> dict[str, Any]:
    eos = _ids(tok, fam.eos_list)
    return dict(vocab_size=_vocab(tok, fam.padded_vocab), pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else tok.convert_tokens_to_ids(fam.eos),
                eos_token_id=eos if len(eos) > 1 else eos[0], tie_word_embeddings=fam.tied, max_position_embeddings=512)


def build_llama3(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer_llama3(texts)
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, rope_parameters=rope, **_common(tok, fam))
    _save(folder, fam, tok, config, LlamaForCausalLM)


def build_mistral(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    tok = tokenizer_sp(texts, [], None, None)
    config = MistralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, sliding_window=WINDOW,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **_common(tok, fam))
    _save(folder, fam, tok, config, MistralForCausalLM)


def build_qwen2(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokenizer_qwen(texts)
    # as Qwen2's real configs: a sliding_window value that is switched off (use_sliding_window false)
    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, use_sliding_window=False, sliding_window=WINDOW, max_window_layers=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **_common(tok, fam))
    _save(folder, fam, tok, config, Qwen2ForCausalLM)


def build_qwen3(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = tokenizer_qwen(texts)
    config = Qwen3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, use_sliding_window=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **_common(tok, fam))
    _save(folder, fam, tok, config, Qwen3ForCausalLM)


def build_gemma2(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    tok = tokenizer_gemma(texts, multimodal=False)
    config = Gemma2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW,
                          layer_types=["sliding_attention", "full_attention"], attn_logit_softcapping=50.0,
                          final_logit_softcapping=30.0, **_common(tok, fam))
    _save(folder, fam, tok, config, Gemma2ForCausalLM)


def _gemma3_text(tok: Any, fam: Family) -> Any:
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW,
                            layer_types=["sliding_attention", "full_attention"], **_common(tok, fam))


def build_gemma3_text(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import Gemma3ForCausalLM

    tok = tokenizer_gemma(texts, multimodal=False)
    _save(folder, fam, tok, _gemma3_text(tok, fam), Gemma3ForCausalLM)


def build_gemma3(folder: Path, fam: Family, texts: list[str]) -> None:
    """As google/gemma-3-4b-it: model_type gemma3, Gemma3ForConditionalGeneration, a SigLIP tower."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    tok = tokenizer_gemma(texts, multimodal=True)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=16, patch_size=4, vision_use_head=False)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<start_of_image>", "<end_of_image>", "<image_soft_token>")}
    config = Gemma3Config(text_config=_gemma3_text(tok, fam), vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                          image_token_index=ids["<image_soft_token>"], tie_word_embeddings=True)
    config.eos_token_id = _common(tok, fam)["eos_token_id"]
    config.pad_token_id, config.bos_token_id = tok.pad_token_id, tok.bos_token_id
    _save(folder, fam, tok, config, Gemma3ForConditionalGeneration)


def build_phi3(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import Phi3Config, Phi3ForCausalLM

    tok = tokenizer_sp(texts, ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"],
                       "<|endoftext|>", PHI3_CHAT, eos="<|endoftext|>")
    config = Phi3Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, sliding_window=None,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **_common(tok, fam))
    _save(folder, fam, tok, config, Phi3ForCausalLM)


def build_gpt2(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer_gpt2(texts, "gpt2", [], ["<|endoftext|>"], None)
    c = _common(tok, fam)
    config = GPT2Config(vocab_size=c["vocab_size"], n_positions=512, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=c["bos_token_id"], eos_token_id=c["eos_token_id"], tie_word_embeddings=True)
    _save(folder, fam, tok, config, GPT2LMHeadModel)


def build_gpt_neox(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tok = tokenizer_gpt2(texts, "neox", ["<|endoftext|>", "<|padding|>"], [], None)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}
    config = GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           rope_parameters=rope, use_parallel_residual=True, **_common(tok, fam))
    _save(folder, fam, tok, config, GPTNeoXForCausalLM)


def build_olmo2(folder: Path, fam: Family, texts: list[str]) -> None:
    from transformers import Olmo2Config, Olmo2ForCausalLM

    tok = tokenizer_gpt2(texts, "gpt2", [], ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>"], "<|pad|>",
                         OLMO2_CHAT)
    config = Olmo2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                         **_common(tok, fam))
    _save(folder, fam, tok, config, Olmo2ForCausalLM)


FAMILIES: dict[str, tuple[Family, Callable[[Path, Family, list[str]], None]]] = {
    f.name: (f, b) for f, b in [
        (Family("llama3", "TokenizersBackend", "LlamaForCausalLM", True, None, "<|end_of_text|>",
                ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"), True, False, True, True, None), build_llama3),
        (Family("mistral", "LlamaTokenizer", "MistralForCausalLM", True, None, "</s>", ("</s>",), False, False,
                False, True, WINDOW), build_mistral),
        (Family("qwen2", "Qwen2Tokenizer", "Qwen2ForCausalLM", False, "<|endoftext|>", "<|im_end|>",
                ("<|im_end|>", "<|endoftext|>"), True, True, False, True, None, padded_vocab=True), build_qwen2),
        (Family("qwen3", "Qwen2Tokenizer", "Qwen3ForCausalLM", False, "<|endoftext|>", "<|im_end|>",
                ("<|im_end|>", "<|endoftext|>"), True, False, False, True, None), build_qwen3),
        (Family("gemma2", "GemmaTokenizer", "Gemma2ForCausalLM", True, "<pad>", "<eos>", ("<eos>", "<end_of_turn>"),
                True, True, False, True, WINDOW), build_gemma2),
        (Family("gemma3_text", "GemmaTokenizer", "Gemma3ForCausalLM", True, "<pad>", "<eos>",
                ("<eos>", "<end_of_turn>"), True, True, False, True, WINDOW), build_gemma3_text),
        (Family("gemma3", "GemmaTokenizer", "Gemma3ForConditionalGeneration", True, "<pad>", "<eos>",
                ("<eos>", "<end_of_turn>"), True, True, True, True, WINDOW), build_gemma3),
        (Family("phi3", "LlamaTokenizer", "Phi3ForCausalLM", True, "<|endoftext|>", "<|endoftext|>",
                ("<|endoftext|>", "<|assistant|>", "<|end|>"), True, False, False, True, None, padded_vocab=True),
         build_phi3),
        (Family("gpt2", "GPT2Tokenizer", "GPT2LMHeadModel", False, None, "<|endoftext|>", ("<|endoftext|>",), False,
                True, False, False, None), build_gpt2),
        (Family("gpt_neox", "GPTNeoXTokenizer", "GPTNeoXForCausalLM", False, None, "<|endoftext|>",
                ("<|endoftext|>",), False, False, False, True, None, padded_vocab=True), build_gpt_neox),
        (Family("olmo2", "GPT2Tokenizer", "Olmo2ForCausalLM", False, "<|pad|>", "<|endoftext|>", ("<|endoftext|>",),
                True, False, False, True, None, padded_vocab=True), build_olmo2),
    ]
}
NAMES = list(FAMILIES)


@dataclass
class Built:
    folders: dict[str, Path]
    seconds: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def build_families(root: Path, names: list[str] | None = None) -> Built:
    """Write ``root/<family>`` for every family (or those named); return the folders and build times."""
    texts = corpus()
    folders, seconds = {}, {}
    for name in names or NAMES:
        fam, builder = FAMILIES[name]
        start = time.perf_counter()
        torch.manual_seed(0)
        folder = root / name
        builder(folder, fam, texts)
        folders[name], seconds[name] = folder, time.perf_counter() - start
    return Built(folders, seconds)
