"""The re-analysis policy (assemble/reanalysis.py) on its own: no journal needed."""
from svdmark.assemble.reanalysis import Reanalysis, after_instance, on_request
from svdmark.domain import SeriesState


def test_first_instance_opens_generation_one():
    assert after_instance(None, False) == Reanalysis(1, supersede_pending=False, state=SeriesState.RECEIVING)


def test_instance_after_a_job_opens_the_next_generation():
    assert after_instance(3, True) == Reanalysis(4, supersede_pending=True)


def test_instance_before_any_job_stays_in_the_generation():
    assert after_instance(3, False) == Reanalysis(3, supersede_pending=True)


def test_instance_after_a_purge_starts_afresh():
    assert after_instance(3, True, purged=True) == Reanalysis(4, supersede_pending=True, fresh=True)


def test_a_purged_series_is_not_analysed_again_on_request():
    assert "purged" in on_request(SeriesState.ANALYSED, 3, False, purged=True)
    assert on_request(SeriesState.ANALYSED, 3, False) == Reanalysis(4, supersede_pending=False,
                                                                     state=SeriesState.QUEUED)
