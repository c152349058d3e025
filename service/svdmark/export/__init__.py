"""Send results to destinations through the durable outbox."""
from .cstore import CStoreExporter, Exporter, FolderExporter, SendOutcome, echo
from .outbox import Outbox, backoff

__all__ = ["CStoreExporter", "Exporter", "FolderExporter", "SendOutcome", "echo", "Outbox", "backoff"]
