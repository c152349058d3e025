"""The re-analysis policy: what a newly stored instance does to its series.

A pure decision; :meth:`svdmark.journal.Journal.record_instance` reads the series, asks
:func:`after_instance` and applies the answer in the same transaction.

* the first instance of a series opens it at generation 1;
* an instance for a series whose current generation already has a job (queued, running or
  finished) opens generation + 1: the next analysis supersedes the last one's results;
* every later instance sends the series back to ``receiving`` (the assembler waits for it to be
  complete again) and supersedes the series' pending jobs, which would analyse an incomplete or
  outdated set of images;
* an operator's request (``svdmark jobs reanalyse``, e.g. after a model change) re-opens an analysed
  series at generation + 1, queued at once: the new results supersede the last ones, and a PACS that
  holds those gets an IOCM rejection note for them (see :mod:`svdmark.encode.rejection`);
* a series whose images were purged (``svdmark purge``, the retention policy) cannot be analysed again
  from the spool: an operator's request is refused, and an instance that arrives for it starts afresh at
  generation + 1 whose results stand beside the earlier ones instead of superseding them. The images
  that made those results are gone, so nothing shows that the new ones (perhaps of one stray image)
  replace them; a PACS that sends the whole series again gets a second, complete analysis;
* an instance received again under another Series Instance UID (a PACS that re-split or corrected a series, a
  modality that re-sends with new series UIDs) leaves its series (:func:`after_departure`): a series with
  instances left is judged again on those, as after a late instance; one with none left is closed (analysed, its
  pending jobs never run, its images gone as after a purge: nothing is ever analysed on zero instances).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..domain import SeriesState


@dataclass(frozen=True)
class Reanalysis:
    generation: int  # the series' generation from now on
    supersede_pending: bool  # its pending jobs (any generation) never run
    state: SeriesState = SeriesState.RECEIVING
    fresh: bool = False  # after a purge: this generation's results supersede nothing earlier
    emptied: bool = False  # its last instance left for another series: closed, its images gone as after a purge


def after_instance(generation: int | None, current_has_job: bool, purged: bool = False) -> Reanalysis:
    """``generation``: the series' current generation, None for a series not seen before;
    ``current_has_job``: a job exists for that generation; ``purged``: its images were purged since."""
    if generation is None:
        return Reanalysis(generation=1, supersede_pending=False)
    if purged:
        return Reanalysis(generation=generation + 1, supersede_pending=True, fresh=True)
    return Reanalysis(generation=generation + 1 if current_has_job else generation, supersede_pending=True)


def after_departure(generation: int, current_has_job: bool, remaining: int) -> Reanalysis:
    """An instance left the series for another one; ``remaining``: the instances the series still holds."""
    if remaining:
        return after_instance(generation, current_has_job)
    return Reanalysis(generation=generation, supersede_pending=True, state=SeriesState.ANALYSED, emptied=True)


def on_request(state: SeriesState, generation: int, has_open_job: bool, purged: bool = False) -> Reanalysis | str:
    """An operator asks for a new analysis of a series: the plan, or why not (a sentence)."""
    if purged:
        return ("its images were purged (svdmark purge) or sent again under another series: send the series again to "
                "analyse it")
    if state is SeriesState.RECEIVING:
        return "its instances are still arriving; it is analysed once complete"
    if state is SeriesState.QUEUED or has_open_job:
        return "its analysis is already queued or running"
    return Reanalysis(generation=generation + 1, supersede_pending=False, state=SeriesState.QUEUED)
