"""Evaluation: the harness (every system on the same items), answer filters, statistics and summaries."""

from latentbridge.api.answers import INVALID, extract_answer, is_correct, normalize_number

__all__ = ["INVALID", "extract_answer", "is_correct", "normalize_number"]
