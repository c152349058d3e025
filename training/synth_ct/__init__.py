"""synth_ct: a second, independent NCCT training generator in the domain-randomisation tradition.

``make_ncct(seed, ...) -> Phantom`` draws a head from a heavily deformed label map (the MNI152 maps or a procedural
brain), an elderly atrophy, white matter lesions of a drawn load and pattern, per-label densities, a scanner
(resolution, slice profile, kernel, noise texture, beam hardening, bias, motion) and returns the image with the
per-voxel lesion and white-matter occupancies. See README.md.
"""
from .make import make_ncct

__all__ = ["make_ncct"]
