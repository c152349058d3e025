"""Series completion from evidence; the quiet timer is the last resort; a part is never reported as the whole."""
import numpy as np
import pytest

from svdmark.assemble import Assembler, SeriesEvidence, counts_complete, decide, missing, stack_problem
from svdmark.geometry import SliceGeometry

AXIAL = [1, 0, 0, 0, 1, 0]


def stack(n, step=5.0, missing=(), dup=(), iop=AXIAL, declared=None):
    out = []
    for k in range(n):
        if k in missing:
            continue
        z = k * step
        out.append(SliceGeometry(ipp=(0, 0, z), iop=tuple(iop), images_in_acquisition=declared, acquisition=1))
        if k in dup:
            out.append(out[-1])
    return out


def test_complete_stack_has_no_problem():
    assert stack_problem(stack(20)) is None


def test_tilted_stack_is_complete():
    import math

    t = math.radians(20)
    iop = [1, 0, 0, 0, math.cos(t), math.sin(t)]
    geoms = [SliceGeometry(ipp=(0, 0, 5.0 * k), iop=tuple(iop)) for k in range(12)]
    assert stack_problem(geoms) is None


@pytest.mark.parametrize(
    "geoms, expected",
    [
        (stack(20, missing={7}), "uneven spacing"),
        (stack(20, dup={3}), "duplicate"),
        (stack(2), "only 2"),
        (stack(5) + [SliceGeometry(ipp=(0, 0, 30), iop=(0, 1, 0, 0, 0, -1))], "mixed orientations"),
    ],
)
def test_stack_problems_are_named(geoms, expected):
    assert expected in stack_problem(geoms)


def ev(geoms, released=True, open_=False, quiet=5.0):
    return SeriesEvidence(geoms, released, open_, quiet)


def reason(e, *args):
    done = decide(e, *args)
    return None if done is None else done.reason


def test_release_plus_geometry_completes_after_settle():
    assert "released" in reason(ev(stack(20)), 2, 60)
    assert decide(ev(stack(20)), 2, 60).warning is None
    assert decide(ev(stack(20), quiet=1.0), 2, 60) is None  # settle time not over


def test_open_association_waits_even_if_stack_looks_complete():
    assert decide(ev(stack(20), released=False, open_=True), 2, 60) is None


def test_declared_count_completes_while_association_open():
    assert "declared count" in reason(ev(stack(20, declared=20), released=False, open_=True), 2, 60)
    assert decide(ev(stack(20, declared=25), released=False, open_=True), 2, 60) is None


def test_gap_waits_past_the_fallback_timer_then_completes_with_a_warning():
    g = stack(20, missing={4})
    assert decide(ev(g, quiet=30), 2, 60, 600) is None
    assert decide(ev(g, quiet=61), 2, 60, 600) is None  # the timer alone does not complete a stack with a gap
    done = decide(ev(g, quiet=601), 2, 60, 600)
    assert "longest wait" in done.reason
    assert done.warning == "incomplete series: 19 of 20 images (gap in the slice positions)"


def test_multiframe_instance_is_complete_by_itself_once_its_association_ends():
    """One multi-frame object carries a whole series, unless the series is split in parts (frames, or magnitude and
    phase): while its association is open the next part may be on its way, so it waits (the quiet timer still ends
    the wait for a sender that holds its association open)."""
    g = [SliceGeometry(frames=48)]
    assert counts_complete(g)
    assert "multi-frame" in reason(ev(g), 2, 60)
    assert "multi-frame" in reason(ev(g, released=False, open_=False), 2, 60)  # aborted after it: nothing to wait for
    assert decide(ev(g, released=False, open_=True), 2, 60) is None
    assert decide(ev(g, released=False, open_=True, quiet=61), 2, 60) is not None


def test_released_non_stack_completes_without_waiting_for_fallback():
    localiser = [SliceGeometry(ipp=(0, 0, 0), iop=tuple(AXIAL)), SliceGeometry(ipp=(0, 0, 0), iop=(0, 1, 0, 0, 0, -1)),
                 SliceGeometry(ipp=(0, 0, 0), iop=(1, 0, 0, 0, 0, -1))]
    assert "not a single stack (mixed orientations)" in reason(ev(localiser), 2, 60)
    assert "not a single stack (only 1 slice(s))" in reason(ev(stack(1)), 2, 60)
    assert decide(ev(stack(1), released=False, open_=True), 2, 60) is None


def test_declared_count_wins_over_release_and_geometry():
    # the first of two associations: 14 of 29 declared slices, a gap-free stack, released
    first = stack(14, declared=29)
    assert stack_problem(first) is None
    assert decide(ev(first, quiet=5), 2, 60, 600) is None
    assert decide(ev(first, quiet=61), 2, 60, 600) is None  # not at the fallback timer either
    assert "declared count" in reason(ev(stack(29, declared=29)), 2, 60, 600)


def test_short_of_the_declared_count_is_analysed_after_the_longest_wait_with_n_of_m():
    g = stack(29, declared=500)
    done = decide(ev(g, quiet=600), 2, 60, 600)
    assert done.warning == "incomplete series: 29 of 500 images (Images in Acquisition declares 500)"


def test_an_association_that_ended_without_release_is_suspect_at_the_timer():
    g = stack(20)  # a gap-free prefix: 20 of 40 slices sent before the sender was killed
    assert decide(ev(g, released=False, quiet=61), 2, 60, 600) is None
    done = decide(ev(g, released=False, quiet=600), 2, 60, 600)
    assert done.warning.startswith("incomplete series: 20 images") and "without a normal release" in done.warning
    # an association still open and quiet past the timer has nothing against it: completes as before
    assert decide(ev(g, released=False, open_=True, quiet=61), 2, 60, 600).warning is None


def test_the_longest_wait_is_never_shorter_than_the_timer():
    g = stack(10, declared=20)
    assert decide(ev(g, quiet=100), 2, 120, 30) is None
    assert decide(ev(g, quiet=120), 2, 120, 30).warning.startswith("incomplete series: 10 of 20")


def test_nothing_missing_in_complete_evidence():
    assert missing(ev(stack(20, declared=20))) is None
    assert missing(ev(stack(20))) is None


def test_assembler_logs_a_held_series_once_and_queues_it_with_the_warning(tmp_path, caplog, journal_url):
    import logging
    from pathlib import Path

    from svdmark.journal import Journal

    j = Journal(journal_url)
    for k, g in enumerate(stack(14, declared=29)):
        j.record_instance(sop_uid=f"1.2.3.{k}", study_uid="1.2", series_uid="1.2.3", sop_class="1.2.840.10008.5.1.4.1.1.2",
                          transfer_syntax="1.2.840.10008.1.2.1", path=Path(f"/x/{k}"), size=1, digest=f"d{k}",
                          modality="CT", geometry=g, calling_ae="SCU", now=0.0)
    j.mark_released(["1.2.3"])
    a = Assembler(j, set, 2, 60, 600)
    caplog.set_level(logging.INFO, logger="svdmark.assemble")
    for t in range(3, 600, 7):
        assert a.tick(now=float(t)) == []
    assert [r.getMessage() for r in caplog.records] == ["series_incomplete_waiting"]
    (job_id,) = a.tick(now=600.0)
    job = j.claim_job()
    assert (job.id, job.completion) == (job_id, "quiet for 600 s (longest wait for an incomplete series)")
    assert job.warning == "incomplete series: 14 of 29 images (Images in Acquisition declares 29)"


def test_completion_and_volume_loading_share_one_set_of_stack_tolerances():
    from svdmark import volume
    from svdmark.geometry import MISSING_SLICE_FACTOR

    assert volume.MISSING_SLICE_FACTOR == MISSING_SLICE_FACTOR
    # a step 1.4 × the median is uneven but not a gap, for completion as for volume.load (a warning there)
    z = [0, 5, 10, 17, 22, 27]
    assert stack_problem([SliceGeometry(ipp=(0, 0, v), iop=tuple(AXIAL)) for v in z]) is None
    z = [0, 5, 10, 18, 23, 28]  # 1.6 ×: a gap for both
    assert "uneven spacing" in stack_problem([SliceGeometry(ipp=(0, 0, v), iop=tuple(AXIAL)) for v in z])


def test_slice_geometry_round_trips_the_journalled_json():
    row = {"ipp": [0.0, 0.0, 5.0], "iop": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "frames": None,
           "images_in_acquisition": 30, "acquisition": 1}
    assert SliceGeometry.from_json(row).to_json() == row
    lossy = dict(row, lossy_source=True)
    assert SliceGeometry.from_json(lossy).lossy_source and SliceGeometry.from_json(lossy).to_json() == lossy
    assert SliceGeometry.from_json({}) == SliceGeometry()


def test_assembler_reads_no_instances_of_a_series_still_arriving(journal_url):
    """Each stored instance wakes the check; within the settle time it must not re-read the series' instances
    (work growing with the square of the series' size during a transfer), and after it it completes as before."""
    from pathlib import Path

    from svdmark.journal import Journal

    j = Journal(journal_url)
    for k, g in enumerate(stack(12)):
        j.record_instance(sop_uid=f"1.2.3.{k}", study_uid="1.2", series_uid="1.2.3", sop_class="1.2.840.10008.5.1.4.1.1.2",
                          transfer_syntax="1.2.840.10008.1.2.1", path=Path(f"/x/{k}"), size=1, digest=f"d{k}",
                          modality="CT", geometry=g, calling_ae="SCU", now=10.0)
    j.mark_released(["1.2.3"])
    reads = []
    instances = j.instances
    j.instances = lambda uid: reads.append(uid) or instances(uid)
    a = Assembler(j, set, 2, 60, 600)
    assert a.tick(now=10.0) == [] and a.tick(now=11.9) == []
    assert reads == []
    (job_id,) = a.tick(now=12.0)
    assert reads == ["1.2.3"]
    assert j.claim_job().completion == "association released and stack geometrically complete (12 slices)"


@pytest.mark.parametrize("steps, gaps", [
    ([5.0] * 9 + [10.0] * 8, []),  # 5 mm through the posterior fossa, 10 mm above: two zones
    ([10.0] * 4 + [5.0] * 11, []),  # the other way round
    ([5.0] * 9 + [10.0] + [5.0] * 4, [9]),  # a lone 10 mm step: one slice missing
    ([5.0] * 9 + [10.0] * 2, [9, 10]),  # a "zone" of two steps is two gaps
    # a missing slice inside a zone: not two even zones, so every long step counts (refused, never measured wrong)
    ([5.0] * 5 + [10.0] + [5.0] * 3 + [10.0] * 6, [5, 9, 10, 11, 12, 13, 14]),
    ([2.0] * 6 + [10.0] * 6, [6, 7, 8, 9, 10, 11]),  # more than MAX_ZONE_RATIO apart: gaps
])
def test_a_stack_in_two_even_zones_has_no_gap_but_a_lone_long_step_is_one(steps, gaps):
    from svdmark.geometry import spacing

    assert list(spacing(np.concatenate([[0.0], np.cumsum(steps)])).gaps) == gaps


def test_two_zones_are_a_ct_protocol_only_when_asked():
    """``volume.load`` reads MR stacks without the two-zone rule (its patch sampling assumes one step)."""
    from svdmark.geometry import spacing

    d = np.concatenate([[0.0], np.cumsum([2.0] * 6 + [4.0] * 5)])
    assert list(spacing(d).gaps) == [] and list(spacing(d, zones=False).gaps) == [6, 7, 8, 9, 10]
