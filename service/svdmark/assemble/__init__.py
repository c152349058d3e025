"""Decide when a series is complete and queue its analysis."""
from .assembler import Assembler
from ..completion import Completion, SeriesEvidence, counts_complete, declared_count, decide, missing, stack_problem

__all__ = ["Assembler", "Completion", "SeriesEvidence", "counts_complete", "declared_count", "decide", "missing",
           "stack_problem"]
