"""Series completion from evidence; the quiet timer is the last resort."""
import pytest

from svdmark.assemble import SeriesEvidence, counts_complete, decide, stack_problem

AXIAL = [1, 0, 0, 0, 1, 0]


def stack(n, step=5.0, missing=(), dup=(), iop=AXIAL, declared=None):
    out = []
    for k in range(n):
        if k in missing:
            continue
        z = k * step
        out.append({"ipp": [0, 0, z], "iop": iop, "frames": None, "images_in_acquisition": declared, "acquisition": 1})
        if k in dup:
            out.append(dict(out[-1]))
    return out


def test_complete_stack_has_no_problem():
    assert stack_problem(stack(20)) is None


def test_tilted_stack_is_complete():
    import math

    t = math.radians(20)
    iop = [1, 0, 0, 0, math.cos(t), math.sin(t)]
    geoms = [{"ipp": [0, 0, 5.0 * k], "iop": iop} for k in range(12)]
    assert stack_problem(geoms) is None


@pytest.mark.parametrize(
    "geoms, expected",
    [
        (stack(20, missing={7}), "uneven spacing"),
        (stack(20, dup={3}), "duplicate"),
        (stack(2), "only 2"),
        (stack(5) + [{"ipp": [0, 0, 30], "iop": [0, 1, 0, 0, 0, -1]}], "mixed orientations"),
    ],
)
def test_stack_problems_are_named(geoms, expected):
    assert expected in stack_problem(geoms)


def ev(geoms, released=True, open_=False, quiet=5.0):
    return SeriesEvidence(geoms, released, open_, quiet)


def test_release_plus_geometry_completes_after_settle():
    assert "released" in decide(ev(stack(20)), 2, 60)
    assert decide(ev(stack(20), quiet=1.0), 2, 60) is None  # settle time not over


def test_open_association_waits_even_if_stack_looks_complete():
    assert decide(ev(stack(20), released=False, open_=True), 2, 60) is None


def test_declared_count_completes_while_association_open():
    assert "declared count" in decide(ev(stack(20, declared=20), released=False, open_=True), 2, 60)
    assert decide(ev(stack(20, declared=25), released=False, open_=True), 2, 60) is None


def test_gap_waits_for_fallback_then_completes():
    g = stack(20, missing={4})
    assert decide(ev(g, quiet=30), 2, 60) is None
    assert "fallback" in decide(ev(g, quiet=61), 2, 60)


def test_multiframe_instance_is_complete_by_itself():
    g = [{"ipp": None, "iop": None, "frames": 48, "images_in_acquisition": None, "acquisition": None}]
    assert counts_complete(g)
    assert "multi-frame" in decide(ev(g, released=False, open_=True), 2, 60)


def test_released_non_stack_completes_without_waiting_for_fallback():
    localiser = [{"ipp": [0, 0, 0], "iop": AXIAL}, {"ipp": [0, 0, 0], "iop": [0, 1, 0, 0, 0, -1]},
                 {"ipp": [0, 0, 0], "iop": [1, 0, 0, 0, 0, -1]}]
    assert "not a single stack (mixed orientations)" in decide(ev(localiser), 2, 60)
    assert "not a single stack (only 1 slice(s))" in decide(ev(stack(1)), 2, 60)
    assert decide(ev(stack(1), released=False, open_=True), 2, 60) is None
