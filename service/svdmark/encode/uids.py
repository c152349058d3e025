"""Deterministic UIDs: the same seed always gives the same objects."""
from __future__ import annotations

from pydicom.uid import UID, generate_uid


def derive(uid_seed: str, kind: str) -> UID:
    """A UID under pydicom's root, derived from ``uid_seed`` and the object kind."""
    if not uid_seed:
        raise ValueError("uid_seed must be a non-empty string")
    return generate_uid(entropy_srcs=[uid_seed, kind])
