"""Jobs and deliveries as an operator reads them: series description, accession, times, result.

The journal keeps UIDs and epoch times; a PACS team looks series up by description,
accession number and time. The header fields come from the first spooled instance of
the series (read without pixels, once per series); when the spool no longer has it
they are None. Times are ISO 8601 UTC. These dicts are also the ``--json`` shapes of
``jobs list|show`` and ``outbox list``, so their keys are stable.
"""
from __future__ import annotations

from ..domain import DeliveryState
from ..journal import JobRecord
from ..journal_api import ReadJournal
from ..summary import ResultSummary
from .common import iso

HEADER_TAGS = ("SeriesDescription", "AccessionNumber", "SeriesNumber", "Modality")


class SeriesHeaders:
    """SeriesDescription / AccessionNumber / SeriesNumber of a series, from its first spooled instance."""

    def __init__(self, journal: ReadJournal):
        self.journal = journal
        self._cache: dict[str, dict[str, str | None]] = {}

    def get(self, series_uid: str) -> dict[str, str | None]:
        if series_uid not in self._cache:
            self._cache[series_uid] = self._read(series_uid)
        return self._cache[series_uid]

    def _read(self, series_uid: str) -> dict[str, str | None]:
        import pydicom

        out: dict[str, str | None] = {"series_description": None, "accession_number": None, "series_number": None}
        path = self.journal.first_instance_path(series_uid)
        if path is None:
            return out
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
        except Exception:  # spool cleaned up, or unreadable: the listing still shows the job
            return out
        out["series_description"] = str(ds.get("SeriesDescription", "") or "") or None
        out["accession_number"] = str(ds.get("AccessionNumber", "") or "") or None
        out["series_number"] = str(ds.get("SeriesNumber", "") or "") or None
        return out


def result_text(summary: ResultSummary | None) -> str | None:
    """``12.34 mL WML``, ``3 CMB, grade mild``, ``withheld: <reason>``; None without a summary."""
    if summary is None:
        return None
    if summary.measurable is False:
        reasons = "; ".join(summary.quality_reasons)
        return "withheld" + (f": {reasons}" if reasons else "")
    if summary.task == "wml" and summary.wml_ml is not None:
        return f"{summary.wml_ml:.2f} mL WML"
    if summary.task == "cmb" and summary.cmb_count is not None:
        grade = summary.cmb_grade
        return f"{summary.cmb_count} CMB" + (f", grade {grade}" if grade is not None else "")
    return None


def job_view(row: JobRecord, series: dict, headers: SeriesHeaders, full: bool = False) -> dict:
    """One job; ``full`` adds the summary and every other journal column (``--json`` and ``jobs show``)."""
    j = row.columns()
    summary = j["summary"]
    s = series.get(j["series_uid"]) or {}
    view = {
        "id": j["id"],
        "state": j["state"],
        "received_at": iso(s.get("first_received")),
        "modality": s.get("modality"),
        **headers.get(j["series_uid"]),
        "routing": j["routing"],
        "result": result_text(summary),
        "detail": j["detail"],  # why it was ignored or failed; for a done job, why it was analysed (its routing)
        "model_name": j["model_name"],
        "model_version": j["model_version"],
        "created_at": iso(j["created_at"]),
        "finished_at": iso(j["finished_at"]),
        "attempts": j["attempts"],
        "series_uid": j["series_uid"],
        "study_uid": j["study_uid"],
    }
    if full:  # every other journal column too, times as ISO 8601, the summary as an object
        view["model_sha256"] = j.pop("model_sha", None)
        for key, value in j.items():
            if key not in view and key != "summary":
                view[key] = iso(value or None) if key.endswith("_at") or key == "not_before" else value
        view["summary"] = summary.to_json() if summary is not None else None
    return view


def series_index(journal: ReadJournal) -> dict[str, dict]:
    return {s.series_uid: {"modality": s.modality, "first_received": s.first_received}
            for s in journal.all_series()}


def jobs(journal: ReadJournal, rows: list[JobRecord], full: bool = False) -> list[dict]:
    series, headers = series_index(journal), SeriesHeaders(journal)
    return [job_view(r, series, headers, full) for r in rows]


def deliveries(journal: ReadJournal, rows: list) -> list[dict]:
    """Deliveries with the result object's kind and its series (description, accession, job)."""
    series, headers = series_index(journal), SeriesHeaders(journal)
    results = {r.sop_uid: r for r in journal.results()}
    out = []
    for row in rows:
        d = dict(row)
        res = results.get(d["sop_uid"])
        uid = res.series_uid if res else None
        hdr = headers.get(uid) if uid else {"series_description": None, "accession_number": None,
                                             "series_number": None}
        out.append({
            "id": d["id"],
            "destination": d["destination"],
            "state": d["state"],
            "attempts": d["attempts"],
            "kind": res.kind if res else None,
            "job_id": res.job_id if res else None,
            "modality": (series.get(uid) or {}).get("modality") if uid else None,
            **hdr,
            "created_at": iso(res.created_at if res else None),
            "next_attempt_at": (iso(d["next_attempt_at"])
                                if d["state"] in (DeliveryState.PENDING.value, DeliveryState.SENDING.value) else None),
            "delivered_at": iso(d["delivered_at"]),
            "last_error": d["last_error"],
            "sop_uid": d["sop_uid"],
            "series_uid": uid,
        })
    return out
