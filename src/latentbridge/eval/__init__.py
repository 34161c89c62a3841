"""Evaluation: answer extraction and scoring (more arrives with the evaluation harness)."""

from .answers import INVALID, extract_answer, is_correct, normalize_number

__all__ = ["INVALID", "extract_answer", "is_correct", "normalize_number"]
