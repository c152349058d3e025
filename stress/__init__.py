"""Independent stress set for svdmark (NCCT WML volume, SWI microbleeds).

Built without ``svdmark_phantom`` or ``training``: own anatomy (``anatomy``),
lesions and mimics (``lesions``), acquisition physics (``scanner``) and DICOM
writer (``dicomio``). ``python -m stress.build`` writes cases, ``python -m
stress.score`` runs the service's own stages on them. See README.md.
"""
STRESS_VERSION = "1.0"
