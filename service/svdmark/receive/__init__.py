"""Receive instances over DICOM: inspect, store durably, journal, acknowledge."""
from .inspect import LOSSY_WARNING, SUPPORTED_SOP_CLASSES, Inspected, inspect, lossy_source
from .scp import AssociationTracker, Receiver, build_ae

__all__ = ["SUPPORTED_SOP_CLASSES", "Inspected", "inspect", "lossy_source", "LOSSY_WARNING", "AssociationTracker",
           "Receiver", "build_ae"]
