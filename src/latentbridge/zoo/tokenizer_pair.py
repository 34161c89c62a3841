"""Two deliberately different tokenizers trained on the arith train split.

* ``llama`` style: byte-level BPE (GPT-2/Llama-3 pre-tokenizer regex), every digit
  its own token, bos ``<|begin_of_text|>``, eos ``<|end_of_text|>``.
* ``mistral`` style: SentencePiece-like character BPE with a ``▁`` Metaspace
  pre-tokenizer, digits *not* split (so numbers become one or a few multi-digit
  pieces), smaller vocabulary, bos ``<s>``, eos ``</s>``, ``<unk>``.

Both are wrapped as :class:`transformers.PreTrainedTokenizerFast` (bos is
prepended automatically, eos is not) and round-trip the arith text exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

LLAMA_SPECIAL = {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": "<|pad|>"}
MISTRAL_SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"}


def _wrap(tok: Tokenizer, special: dict[str, str]) -> PreTrainedTokenizerFast:
    bos = special["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=special["eos"],
        pad_token=special["pad"],
        unk_token=special.get("unk"),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return fast


def train_llama_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with individually split digits (Llama-3 flavour)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    specials = [LLAMA_SPECIAL[k] for k in ("bos", "eos", "pad")]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok, LLAMA_SPECIAL)


def train_mistral_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE: ``▁`` Metaspace words, newlines isolated, digits *not* split.

    Frequent numbers become single pieces (``▁42``, ``▁$13``) while rare ones are
    split irregularly (``▁7`` ``8``), unlike the digit-by-digit llama tokenizer.
    The base alphabet is characters (not bytes), with ``<unk>`` for unseen ones.
    (The ``tokenizers`` Unigram trainer was tried first but produced degenerate
    character-level pieces for common words on this tiny corpus.)
    """
    tok = Tokenizer(models.BPE(unk_token=MISTRAL_SPECIAL["unk"]))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    specials = [MISTRAL_SPECIAL[k] for k in ("unk", "bos", "eos", "pad")]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok, MISTRAL_SPECIAL)
