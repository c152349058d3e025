"""devset: an independent synthetic NCCT development set for white-matter lesion volume (model, threshold
and post-processing choices only; never for training). See README.md."""
