"""Binary DICOM SEG of the findings mask, frame by frame on the source images."""
from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset

from ..domain import AnalysisResult, Volume
from ..errors import SvdmarkError
from .templates import Templates, concept
from .uids import derive


class EncodeError(SvdmarkError):
    """The result cannot be encoded against its source images."""


def source_datasets(result: AnalysisResult) -> list[Dataset]:
    """The source datasets in *volume* order (one per slice; one total for multi-frame)."""
    by_uid = {ds.SOPInstanceUID: ds for ds in result.series.datasets}
    frames = result.volume.frames
    missing = sorted({f.sop_instance_uid for f in frames} - set(by_uid))
    if missing:
        raise EncodeError(f"volume references {len(missing)} instance(s) that are not in the series, "
                          f"e.g. {missing[0]}")
    if any(f.frame_number is not None for f in frames):
        uids = list(dict.fromkeys(f.sop_instance_uid for f in frames))
        return [by_uid[u] for u in uids]
    return [by_uid[f.sop_instance_uid] for f in frames]


def seg_pixel_array(volume: Volume, mask: np.ndarray, sources: Sequence[Dataset]) -> np.ndarray:
    """The mask laid out as highdicom expects: one frame per source image, or per source frame."""
    mask = np.asarray(mask)
    if mask.shape != volume.shape:
        raise EncodeError(f"mask shape {mask.shape} does not match volume shape {volume.shape}")
    binary = (mask > 0).astype(np.uint8)
    if volume.frames and volume.frames[0].frame_number is not None:
        if len(sources) != 1:
            raise EncodeError("multi-frame source series with more than one instance is not supported "
                              "for SEG encoding")
        n = int(sources[0].NumberOfFrames)
        out = np.zeros((n,) + binary.shape[1:], np.uint8)
        for k, f in enumerate(volume.frames):
            if f.frame_number is None or not 1 <= f.frame_number <= n:
                raise EncodeError(f"slice {k} refers to frame {f.frame_number} of a {n}-frame image")
            out[f.frame_number - 1] = binary[k]
        return out
    return binary


def segment_description(result: AnalysisResult, templates: Templates, uid_seed: str) -> hd.seg.SegmentDescription:
    seg_tpl = templates.task(result.model.task)["segment"]
    algo = algorithm_identification(result, templates)
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=seg_tpl["label"],
        segmented_property_category=concept(seg_tpl["category"]),
        segmented_property_type=concept(seg_tpl["type"]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
        tracking_uid=derive(uid_seed, "segment-1-tracking"),
        tracking_id=seg_tpl["tracking_id"],
        anatomic_regions=[concept(seg_tpl["anatomic_region"])],
        display_color=hd.color.CIELabColor.from_rgb(*seg_tpl["display_rgb"]),
    )


def algorithm_identification(result: AnalysisResult, templates: Templates) -> hd.AlgorithmIdentificationSequence:
    m = result.model
    return hd.AlgorithmIdentificationSequence(
        name=m.name,
        family=concept(templates.common["report"]["algorithm_family"]),
        version=m.version,
        source=templates.common["equipment"]["manufacturer"],
        parameters={"sha256": m.sha256, "ruleset": f"{result.ruleset.id} {result.ruleset.version}"},
    )


def encode_seg(result: AnalysisResult, templates: Templates, uid_seed: str,
               software_version: str) -> hd.seg.Segmentation:
    """One binary segment; every source slice gets a frame (empty ones too), in source order.

    Keeping empty frames makes the frame ↔ source-slice mapping total and
    exact (also on tilted CT), and lets a zero-finding result still be a valid
    SEG with at least one frame.
    """
    sources = source_datasets(result)
    pixels = seg_pixel_array(result.volume, result.findings.mask, sources)
    eq = templates.common["equipment"]
    series = templates.common["series"]["seg"]
    task_tpl = templates.task(result.model.task)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(result, templates, uid_seed)],
        series_instance_uid=derive(uid_seed, "seg-series"),
        series_number=int(series["number"]),
        sop_instance_uid=derive(uid_seed, "seg"),
        instance_number=1,
        manufacturer=eq["manufacturer"],
        manufacturer_model_name=eq["manufacturer_model_name"],
        software_versions=software_version,
        device_serial_number=eq["device_serial_number"],
        omit_empty_frames=False,
        content_label=task_tpl["segment"]["label"].upper()[:16],
        content_description=task_tpl["segment"]["description"][:64],
        series_description=series["description"],
    )
    if "ContentCreatorName" not in seg:
        seg.ContentCreatorName = ""  # Content Identification macro, type 2
    return seg
