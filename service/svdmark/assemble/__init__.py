"""Decide when a series is complete and queue its analysis."""
from .assembler import Assembler
from .completion import SeriesEvidence, counts_complete, decide, stack_problem

__all__ = ["Assembler", "SeriesEvidence", "counts_complete", "decide", "stack_problem"]
