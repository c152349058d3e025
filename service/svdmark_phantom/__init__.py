"""Synthetic heads (NCCT with WML + mimics, SWI with microbleeds) and vendor-styled DICOM writers.

Test data for the demo, tests, training and bench; not part of the service (``svdmark`` never imports
it at module level). It ships in the same wheel; the analytic heads need only svdmark's own
dependencies, the MNI152 atlas heads the ``phantom`` extra (``pip install 'svdmark[phantom]'``: nilearn's
tissue maps, read with nibabel), and JPEG lossless process 14 SV1 dcmtk's ``dcmcjpeg``.

    from svdmark_phantom import make_ncct, make_swi, write_series, write_study
    p = make_ncct(seed=1, matrix=128, slice_thickness=5.0, tilt_deg=20.0, wml_ml=3.0)
    paths = write_series(p, "out/ct", vendor="ge", transfer_syntax="jpegls")
    truth = write_study("out/study1", seed=3, kind="swi", vendor="philips", distractors=True)
"""
from .encoding import ALL_TRANSFER_SYNTAXES, resolve_ts
from .generate import make_ncct, make_swi
from .types import Phantom, SeriesKind, SeriesTruth, StudyInfo, StudyTruth, Vendor, synthetic_uid
from .volume import as_volume
from .writer import write_series, write_study

__all__ = [
    "make_ncct", "make_swi", "write_series", "write_study", "Phantom", "SeriesKind", "SeriesTruth", "StudyInfo",
    "StudyTruth", "Vendor", "ALL_TRANSFER_SYNTAXES", "resolve_ts", "synthetic_uid", "as_volume",
]
