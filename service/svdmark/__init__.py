"""svdmark: cerebral small-vessel disease markers as a DICOM service."""
__version__ = "0.1.0"
