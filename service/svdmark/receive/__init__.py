"""Receive instances over DICOM: inspect, store durably, journal, acknowledge."""
from .inspect import SUPPORTED_SOP_CLASSES, Inspected, inspect
from .scp import AssociationTracker, Receiver, build_ae

__all__ = ["SUPPORTED_SOP_CLASSES", "Inspected", "inspect", "AssociationTracker", "Receiver", "build_ae"]
