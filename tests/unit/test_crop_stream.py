"""training.crop_stream: in-process draws replay the run's generator; worker draws are independent streams."""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import crop_stream  # noqa: E402


def _draw(rng):
    return torch.from_numpy(rng.standard_normal(4))


def test_in_process_replays_the_generator():
    got = list(itertools.islice(crop_stream.batches(_draw, np.random.default_rng(3)), 3))
    ref = np.random.default_rng(3)
    for g in got:
        assert np.array_equal(g.numpy(), ref.standard_normal(4))


def test_workers_draw_distinct_streams():
    got = [b.numpy() for b in itertools.islice(crop_stream.batches(_draw, np.random.default_rng(3), workers=2,
                                                                   seed=5), 6)]
    assert all(g.shape == (4,) for g in got)
    assert len({g.tobytes() for g in got}) == 6  # two workers with one generator each would repeat draws
    first = {np.random.default_rng([5, 0x57, w]).standard_normal(4).tobytes() for w in (0, 1)}
    assert first <= {g.tobytes() for g in got}  # each worker's own seeded generator
