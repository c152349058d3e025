"""Training batches from a sampling function, drawn in the training process or in worker processes.

With ``workers`` = 0 the batches are drawn in this process from the run's own generator, so a recipe replays
exactly on the same machine. With ``workers`` > 0 (a lent GPU machine, where one process cannot draw crops as fast
as the GPU trains on them) a torch ``DataLoader`` runs the same function in forked workers, each with its own
generator seeded from (``seed``, worker id): the draws are the same distribution, not the same sequence, and the
order in which workers deliver is not fixed. Forking shares the loaded stacks with the workers without copying.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, draw: Callable[[np.random.Generator], object], seed: int):
        self.draw, self.seed = draw, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, 0x57, info.id if info is not None else 0])
        while True:
            yield self.draw(rng)


def batches(draw: Callable[[np.random.Generator], object], rng: np.random.Generator, workers: int = 0,
            seed: int = 0, pin_memory: bool = False) -> Iterator:
    """An endless iterator of ``draw(generator)``: in this process with ``rng`` (``workers`` = 0), else in
    ``workers`` forked processes."""
    if workers <= 0:
        while True:
            yield draw(rng)
    loader = torch.utils.data.DataLoader(_Stream(draw, seed), batch_size=None, num_workers=workers,
                                         multiprocessing_context="fork", prefetch_factor=4,
                                         persistent_workers=True, pin_memory=pin_memory)
    yield from loader
