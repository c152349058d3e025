// Reads svdmark output files with dcmjs as OHIF does (DicomMessage.readFile with its default options, which
// refuse a Specific Character Set of several values) and prints each file's character set and patient name.
//
// Usage: node read_charsets.mjs FILE...  →  JSON on stdout: {path: {charset, name} | {error}}
import fs from 'node:fs';
import dcmjs from 'dcmjs';

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;
const out = {};
for (const path of process.argv.slice(2)) {
  try {
    const buf = fs.readFileSync(path);
    const dict = DicomMessage.readFile(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    const ds = DicomMetaDictionary.naturalizeDataset(dict.dict);
    out[path] = { charset: ds.SpecificCharacterSet ?? null, name: ds.PatientName ?? null };
  } catch (err) {
    out[path] = { error: String(err && err.message ? err.message : err) };
  }
}
process.stdout.write(JSON.stringify(out));
