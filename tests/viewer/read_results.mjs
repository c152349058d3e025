// Reads svdmark SR / SEG files with the libraries OHIF uses and prints what a viewer gets from them.
//
// Usage: node read_results.mjs JOB.json  →  JSON on stdout, one entry per case of the job:
//   job:  [{"name", "sr", "seg"?, "images": [paths of the source DICOM files]}]
//   out:  {name: {ohif: {error?, displaySet, measurements}, toolState: {error?, tools}, seg?: {...}}}
//
// `ohif` walks the SR the way OHIF's SR extension (extensions/cornerstone-dicom-sr,
// getSopClassHandlerModule.ts, OHIF 3.10–3.13) does when the SR display set loads: measurement groups
// merged by Tracking Unique Identifier; a group with a top-level SCOORD/SCOORD3D is a TID 1410-style
// measurement (its coordinates + the labels of its NUMs); any other group is "non-geometric": each
// NUM's single child must be its SCOORD (OHIF destructures it, so a NUM without children throws), and
// the measurement is placed with coords[0] (OHIF reads coords[0].ReferencedSOPSequence, so a group
// without coordinates throws). Labels are OHIF's: CodeMeaning and NumericValue.toFixed(2) + unit code.
// A measurement is "loaded" (shown in the measurement panel, clickable) when its first coordinate
// references an image of the source display set (2D) or, for a Comprehensive 3D SR, a SCOORD3D on
// the display set's frame of reference (3D). This is our reading of OHIF's code, re-implemented
// here (OHIF itself is a browser application); the DICOM parsing is dcmjs's own.
//
// `toolState` is @cornerstonejs/adapters' MeasurementReport.generateToolState — the call OHIF makes
// (hydrateStructuredReport) to turn an SR into Cornerstone annotations — with OHIF's SOP instance →
// imageId map, which holds only the images the SR display set placed measurements on (2D), and image
// metadata served from the source images.
import fs from 'node:fs';
import dcmjs from 'dcmjs';
import { metaData } from '@cornerstonejs/core';
import { adaptersSR } from '@cornerstonejs/adapters';

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;
const { MeasurementReport } = adaptersSR.Cornerstone3D;
const COMPREHENSIVE_3D_SR = '1.2.840.10008.5.1.4.1.1.88.34';

function read(path) {
  const buf = fs.readFileSync(path);
  const dict = DicomMessage.readFile(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const ds = DicomMetaDictionary.naturalizeDataset(dict.dict);
  ds._meta = DicomMetaDictionary.namifyDataset(dict.meta);
  return ds;
}

const asArray = (seq) => (!seq ? [] : Array.isArray(seq) ? seq : [seq]);
const code = (seq) => (Array.isArray(seq) ? seq[0] : seq) || {};

// ------------------------------------------------------------------ the source images ("display set")

function imageDisplaySet(paths) {
  const images = [];
  const planes = new Map();
  let frameOfReferenceUID;
  let sopClassUids = new Set();
  for (const p of paths) {
    const ds = read(p);
    frameOfReferenceUID ||= ds.FrameOfReferenceUID;
    sopClassUids.add(ds.SOPClassUID);
    const nFrames = Number(ds.NumberOfFrames || 1);
    const shared = code(ds.SharedFunctionalGroupsSequence);
    for (let f = 1; f <= nFrames; f++) {
      let ipp = ds.ImagePositionPatient;
      let iop = ds.ImageOrientationPatient;
      let spacing = ds.PixelSpacing;
      if (ds.PerFrameFunctionalGroupsSequence) {
        const pf = asArray(ds.PerFrameFunctionalGroupsSequence)[f - 1];
        ipp = code(pf.PlanePositionSequence).ImagePositionPatient;
        iop = code(shared.PlaneOrientationSequence).ImageOrientationPatient;
        spacing = code(shared.PixelMeasuresSequence).PixelSpacing;
      }
      const imageId = `svdmark:${ds.SOPInstanceUID}:${f}`;
      images.push({ imageId, SOPInstanceUID: ds.SOPInstanceUID, frame: f });
      planes.set(imageId, {
        frameOfReferenceUID: ds.FrameOfReferenceUID,
        rows: ds.Rows,
        columns: ds.Columns,
        imagePositionPatient: ipp.map(Number),
        rowCosines: iop.slice(0, 3).map(Number),
        columnCosines: iop.slice(3, 6).map(Number),
        rowPixelSpacing: Number(spacing[0]),
        columnPixelSpacing: Number(spacing[1]),
      });
    }
  }
  // cornerstone's global metadata registry (used by imageToWorldCoords) and the adapters' argument
  const provider = (type, imageId) => (type === 'imagePlaneModule' ? planes.get(imageId) : undefined);
  metaData.addProvider(provider, 10000);
  return { images, frameOfReferenceUID, sopClassUids: [...sopClassUids], metadata: { get: provider } };
}

// ------------------------------------------------------------------ OHIF's SR display set

function labelOf(nameSeq, mvs) {
  const { CodeMeaning } = code(nameSeq);
  const { NumericValue, MeasurementUnitsCodeSequence } = code(mvs);
  const formatted = NumericValue ? Number(NumericValue).toFixed(2) : '';
  return { label: CodeMeaning, value: `${formatted} ${code(MeasurementUnitsCodeSequence).CodeValue}` };
}

function coordsOf(graphicItem) {
  const { ValueType, GraphicType, GraphicData } = graphicItem;
  return {
    ValueType,
    GraphicType,
    GraphicData: GraphicData ? Array.from(GraphicData, Number) : undefined,
    ReferencedSOPSequence: graphicItem.ContentSequence?.ReferencedSOPSequence,
    ReferencedFrameOfReferenceSequence:
      graphicItem.ReferencedFrameOfReferenceUID || graphicItem.ContentSequence?.ReferencedFrameOfReferenceSequence,
  };
}

function findingSiteLabel(items) {
  const site = items.find((i) => code(i.ConceptNameCodeSequence).CodeValue === '363698007');
  return site ? [{ label: '363698007', value: code(site.ConceptCodeSequence).CodeMeaning }] : [];
}

function processMeasurement(items) {
  const uidItem = items.find((i) => i.ValueType === 'UIDREF');
  const trackingItem = items.find((i) => code(i.ConceptNameCodeSequence).CodeValue === '112039');
  const base = {
    loaded: false,
    labels: [],
    coords: [],
    TrackingUniqueIdentifier: uidItem.UID,
    TrackingIdentifier: trackingItem.TextValue,
  };
  const nums = items.filter((i) => i.ValueType === 'NUM');
  const graphic = items.find((i) => i.ValueType === 'SCOORD' || i.ValueType === 'SCOORD3D');
  if (graphic) {
    base.coords.push(coordsOf(graphic));
    for (const n of nums) if (n.MeasuredValueSequence) base.labels.push(labelOf(n.ConceptNameCodeSequence, n.MeasuredValueSequence));
    base.labels.push(...findingSiteLabel(items));
    base.kind = 'TID1410';
    return base;
  }
  base.kind = 'non-geometric';
  for (const c of items.filter((i) => code(i.ConceptNameCodeSequence).CodeValue === '121106')) {
    if (c.TextValue) base.labels.push({ label: c.TextValue, value: '' });
  }
  for (const n of nums) {
    const { ContentSequence } = n;
    const { ValueType } = ContentSequence; // OHIF: throws when the NUM has no children
    void ValueType;
    base.coords.push(coordsOf(ContentSequence));
    if (n.MeasuredValueSequence) base.labels.push(labelOf(n.ConceptNameCodeSequence, n.MeasuredValueSequence));
  }
  return base;
}

function ohifMeasurements(sr, display) {
  const root = sr.ContentSequence;
  if (code(sr.ConceptNameCodeSequence).CodeValue !== '126000') throw new Error('not a TID 1500 report');
  const imaging = root.find((i) => code(i.ConceptNameCodeSequence).CodeValue === '126010');
  if (!imaging) return [];
  const groups = asArray(imaging.ContentSequence).filter((i) => code(i.ConceptNameCodeSequence).CodeValue === '125007');
  const merged = new Map();
  for (const g of groups) {
    const items = asArray(g.ContentSequence);
    const uid = items.find((i) => code(i.ConceptNameCodeSequence).CodeValue === '112040').UID;
    if (!merged.has(uid)) merged.set(uid, [...items]);
    else merged.get(uid).push(...items.filter((i) => code(i.ConceptNameCodeSequence).CodeValue !== '112040'));
  }
  const measurements = [...merged.values()].map(processMeasurement);

  // _checkIfCanAddMeasurementsToDisplaySet
  const byKey = new Map(display.images.map((im) => [`${im.SOPInstanceUID}:${im.frame}`, im.imageId]));
  const is3DSR = sr.SOPClassUID === COMPREHENSIVE_3D_SR;
  for (const m of measurements) {
    const first = m.coords[0];
    if (is3DSR && first?.ValueType === 'SCOORD3D' && first.ReferencedFrameOfReferenceSequence === display.frameOfReferenceUID) {
      m.loaded = true;
      m.mode = '3D';
      continue;
    }
    const ref = first.ReferencedSOPSequence; // OHIF: throws when the group had no coordinates
    if (!ref) continue;
    const frame = ref.ReferencedFrameNumber || 1;
    const imageId = byKey.get(`${ref.ReferencedSOPInstanceUID}:${frame}`);
    if (imageId && ref.ReferencedSOPInstanceUID) {
      m.loaded = true;
      m.mode = '2D';
      m.imageId = imageId;
      m.ReferencedSOPInstanceUID = ref.ReferencedSOPInstanceUID;
      m.frameNumber = Number(frame);
    }
  }
  return measurements.map(({ coords, ...m }) => ({
    ...m,
    coords: coords.map(({ ReferencedSOPSequence, ...c }) => ({
      ...c,
      ReferencedSOPInstanceUID: ReferencedSOPSequence?.ReferencedSOPInstanceUID,
    })),
  }));
}

// ------------------------------------------------------------------ Cornerstone adapters

function toolState(sr, display, measurements) {
  // OHIF's hydrateStructuredReport: the SOP instance → imageId map comes from the SR display set's
  // measurements that were placed on an image (2D), not from the whole series
  const map = {};
  for (const m of measurements || []) {
    const key = `${m.ReferencedSOPInstanceUID}:${m.frameNumber || 1}`;
    if (m.imageId && !map[key]) map[key] = m.imageId;
  }
  const warnings = [];
  const warn = console.warn;
  console.warn = (...a) => warnings.push(a.map(String).join(' ').slice(0, 300));
  const log = console.log;
  console.log = () => {};
  try {
    const state = MeasurementReport.generateToolState(sr, map, display.metadata);
    const tools = {};
    for (const [type, list] of Object.entries(state)) {
      tools[type] = list.map((s) => ({
        sopInstanceUid: s.sopInstanceUid ?? null,
        referencedImageId: s.annotation?.metadata?.referencedImageId ?? null,
        frameOfReferenceUID: s.annotation?.metadata?.FrameOfReferenceUID ?? null,
        points: (s.annotation?.data?.handles?.points || []).map((p) => Array.from(p, Number)),
        label: s.annotation?.data?.label ?? null,
        trackingUniqueIdentifier: s.TrackingUniqueIdentifier ?? null,
      }));
    }
    return { tools, warnings };
  } finally {
    console.warn = warn;
    console.log = log;
  }
}

// ------------------------------------------------------------------ SEG

function segSummary(seg) {
  const segments = asArray(seg.SegmentSequence).map((s) => ({
    number: s.SegmentNumber,
    label: s.SegmentLabel,
    type: code(s.SegmentedPropertyTypeCodeSequence).CodeMeaning,
  }));
  const frames = asArray(seg.PerFrameFunctionalGroupsSequence).map((pf) => {
    const src = asArray(code(pf.DerivationImageSequence).SourceImageSequence)[0] || {};
    return {
      segment: code(pf.SegmentIdentificationSequence).ReferencedSegmentNumber,
      position: (code(pf.PlanePositionSequence).ImagePositionPatient || []).map(Number),
      source: src.ReferencedSOPInstanceUID,
      sourceFrame: src.ReferencedFrameNumber ?? null,
    };
  });
  return {
    frameOfReferenceUID: seg.FrameOfReferenceUID,
    referencedSeries: code(seg.ReferencedSeriesSequence).SeriesInstanceUID,
    numberOfFrames: Number(seg.NumberOfFrames),
    segments,
    frames,
  };
}

// ------------------------------------------------------------------ main

const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = {};
for (const c of job) {
  const display = imageDisplaySet(c.images);
  const sr = read(c.sr);
  const entry = { sopClassUID: sr.SOPClassUID };
  try {
    entry.ohif = { measurements: ohifMeasurements(sr, display) };
  } catch (e) {
    entry.ohif = { error: `${e.name}: ${e.message}` };
  }
  try {
    entry.toolState = toolState(sr, display, entry.ohif.measurements);
  } catch (e) {
    entry.toolState = { error: `${e.name}: ${e.message}` };
  }
  if (c.seg) {
    try {
      entry.seg = segSummary(read(c.seg));
    } catch (e) {
      entry.seg = { error: `${e.name}: ${e.message}` };
    }
  }
  out[c.name] = entry;
}
process.stdout.write(JSON.stringify(out));
