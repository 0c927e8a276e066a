"""Perplexity and bits per byte of a checkpoint or an exported folder (scripts/evaluate.py)."""

from trainer.evaluation.run import evaluate_files, main

__all__ = ["evaluate_files", "main"]
