"""Find DICOM instances under folders and zip files; check each the way the service checks a C-STORE.

Every file is either accepted (``Instance``) or listed with a reason (``FileError``);
nothing found here stops a run. Zip archives are read in place, member by member
(no extraction); an archive inside an archive is listed as an error.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pydicom
from pydicom.uid import UID

from ..completion import SeriesEvidence, counts_complete, missing
from ..errors import Rejected
from ..failures import reason_of
from ..geometry import SliceGeometry
from ..logs import patient_pseudonym
from ..phi import uid_hash
from ..receive.inspect import inspect

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header, or an empty archive
# what reading a file or a zip member can raise (a damaged archive: BadZipFile, zlib.error, EOFError, ...)
READ_ERRORS = (OSError, zipfile.BadZipFile, zlib.error, ValueError, RuntimeError, EOFError)


@dataclass(frozen=True)
class Source:
    """Where one file's bytes live: a plain file, or a member of a zip archive."""

    path: str
    member: str | None = None
    bare: bool = False  # a DICOM data set without the Part 10 preamble and file meta (old archives)

    @property
    def name(self) -> str:
        return f"{self.path}!{self.member}" if self.member else self.path

    def read_bytes(self) -> bytes:
        if self.member is None:
            data = Path(self.path).read_bytes()
        else:
            with zipfile.ZipFile(self.path) as zf:
                data = zf.read(self.member)
        if self.bare:
            data = as_part10(data) or data
        return data

    def open(self):
        """A file object for pydicom (a path for plain Part 10 files, bytes in memory otherwise)."""
        return self.path if self.member is None and not self.bare else io.BytesIO(self.read_bytes())


def as_part10(data: bytes) -> bytes | None:
    """A bare data set (no preamble, no file meta) as Part 10 bytes, or None if it is not one."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if len(data) < 8 or data[:2] not in (b"\x08\x00", b"\x02\x00"):  # starts with group 0008 (or 0002)
        return None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds or "PixelData" not in ds:
            return None
        implicit = ds.original_encoding[0] if ds.original_encoding else True
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta = meta
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()
    except Exception:  # whatever it is, it is not a usable bare data set
        return None


@dataclass(frozen=True)
class Instance:
    source: Source
    sop_uid: str
    study_uid: str
    series_uid: str
    modality: str
    sop_class: str
    patient_pseudonym: str
    series_number: str
    series_description: str
    digest: str  # SHA-256 of the file's bytes: a file rewritten under the same UIDs is another instance
    geometry: SliceGeometry  # what the service's assembler reads of it (declared count, position)


@dataclass(frozen=True)
class FileError:
    file: str
    reason: str
    series_uid: str = ""
    study_uid: str = ""
    sop_uid: str = ""
    folder: bool = field(default=False, compare=False)  # a folder not read (a link, a repeat, unreadable): no file

    def as_row(self) -> dict:
        row = asdict(self)
        del row["folder"]
        return row


def iter_sources(paths: Iterable[Path], skip: Iterable[Path] = ()) -> Iterator[Source | FileError]:
    """Every file under ``paths`` (recursively, sorted), zip members expanded. Linked folders are followed, each
    real folder read once (a link back into a folder already read is listed, not followed: a loop); a folder that
    cannot be read is listed with the reason."""
    skip_resolved = {Path(s).resolve() for s in skip}
    seen: set[Path] = set()
    for root in paths:
        root = Path(root)
        if root.is_file():
            yield from _file_sources(root)
            continue

        if root.resolve() in seen:
            yield FileError(str(root), "inside a folder already read in this run; not read again", folder=True)
            continue
        unreadable: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable.append, followlinks=True):
            yield from _unreadable_folders(unreadable)
            here = Path(dirpath)
            seen.add(here.resolve())
            keep = []
            for d in sorted(dirnames, key=lambda d: ((here / d).is_symlink(), d)):  # real folders claim first
                real = (here / d).resolve()
                if real in skip_resolved:
                    continue
                if real in seen:  # read already (through a link, if this is the real folder: no error then)
                    if (here / d).is_symlink():
                        yield FileError(str(here / d), f"a link to a folder already read ({real}); not read again",
                                        folder=True)
                    continue
                seen.add(real)
                keep.append(d)
            dirnames[:] = sorted(keep)
            for fn in sorted(filenames):
                yield from _file_sources(here / fn)
        yield from _unreadable_folders(unreadable)


def _unreadable_folders(errors: list[OSError]) -> Iterator[FileError]:
    """The folders ``os.walk`` could not list since it was last asked (its ``onerror`` list, emptied)."""
    yield from (FileError(str(e.filename), f"cannot read folder: {e.strerror or e}", folder=True) for e in errors)
    errors.clear()


def _file_sources(path: Path) -> Iterator[Source | FileError]:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        yield FileError(str(path), f"cannot read file: {reason_of(exc)}")
        return
    if head not in ZIP_MAGIC:
        yield Source(str(path))
        return
    try:
        with zipfile.ZipFile(path) as zf:
            members = sorted(i.filename for i in zf.infolist() if not i.is_dir())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        yield FileError(str(path), f"damaged zip archive: {reason_of(exc)}")  # zipfile quotes member names
        return
    for m in members:
        yield Source(str(path), m)


def scan(source: Source, key: bytes) -> Instance | FileError:
    """Read one file and accept it as an analysable image instance, or say why not."""
    try:
        data = source.read_bytes()
    except READ_ERRORS as exc:
        return FileError(source.name, f"cannot read: {reason_of(exc)}")  # a member's name may name the patient
    if data[:4] in ZIP_MAGIC and source.member is not None:
        return FileError(source.name, "zip archive inside a zip archive; extract it first")
    if len(data) == 0:
        return FileError(source.name, "empty file")
    if len(data) < 132 or data[128:132] != b"DICM":
        converted = as_part10(data)
        if converted is None:
            return FileError(source.name, "not a DICOM file (no 'DICM' marker at byte 128)")
        source, data = Source(source.path, source.member, bare=True), converted
    try:
        found = inspect(data)
    except Rejected as exc:
        ident = _identity(data)
        return FileError(source.name, exc.reason, ident.get("series_uid", ""), ident.get("study_uid", ""),
                         exc.sop_uid or ident.get("sop_uid", ""))
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                             specific_tags=["PatientID", "IssuerOfPatientID", "SeriesNumber",
                                                "SeriesDescription"])
    return Instance(
        source=source,
        sop_uid=found.sop_uid,
        study_uid=found.study_uid,
        series_uid=found.series_uid,
        modality=found.modality,
        sop_class=found.sop_class,
        patient_pseudonym=patient_pseudonym(header, key),
        series_number=str(header.get("SeriesNumber", "") or ""),
        series_description=str(header.get("SeriesDescription", "") or ""),
        digest=hashlib.sha256(data).hexdigest(),
        geometry=found.geometry,
    )


def _identity(data: bytes) -> dict:
    """Best-effort UIDs of a rejected file, so an error row can name its series; a value that is not a valid UID
    (it may hold an identifier) as its keyed hash (``phi.uid_hash``)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                             specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
    except Exception:  # anything unparseable simply has no identity
        return {}
    values = {}
    for key, attr in (("study_uid", "StudyInstanceUID"), ("series_uid", "SeriesInstanceUID"),
                      ("sop_uid", "SOPInstanceUID")):
        try:  # pydicom parses a value when it is read: a damaged element raises here, not in dcmread
            values[key] = str(ds.get(attr, "") or "")
        except Exception:
            values[key] = ""
    return {k: v if not v or UID(v).is_valid else uid_hash(v) for k, v in values.items()}


@dataclass(frozen=True)
class SeriesGroup:
    study_uid: str
    series_uid: str
    instances: tuple[Instance, ...]  # sorted by SOP Instance UID (the order the pipeline reads them)

    @property
    def first(self) -> Instance:
        return self.instances[0]

    def series_source(self):
        """The instances as ``pipeline.SeriesSource`` (plain files as paths, zip members read when asked)."""
        from ..pipeline import SeriesSource

        return SeriesSource(self.study_uid, self.series_uid, tuple((i.sop_uid, i.source.open) for i in self.instances))

    @cached_property  # (frozen: the instances never change; cached_property writes the instance dict directly)
    def fingerprint(self) -> str:
        """The series' instances and their bytes: a finished analysis is reused only for the same files."""
        h = hashlib.sha256()
        for i in self.instances:
            h.update(i.sop_uid.encode() + b"\0" + i.digest.encode() + b"\0")
        return h.hexdigest()

    @cached_property
    def completion_warning(self) -> str | None:
        """The service's ``incomplete series: N of M images`` warning, judged on everything the archive holds (as if
        its sender had released the association long ago)."""
        geoms = tuple(i.geometry for i in self.instances)
        if counts_complete(geoms):  # the service takes a series at its declared count as complete, with no warning
            return None
        return missing(SeriesEvidence(geoms, released=True, association_open=False, quiet_seconds=float("inf")))


def group(instances: Iterable[Instance]) -> tuple[list[SeriesGroup], list[FileError]]:
    """Group by Series Instance UID; a second file with a SOP Instance UID already read is listed, not used: a
    duplicate when its bytes are the same, a conflicting copy when they differ (the one read first is kept). A file
    whose Series Instance UID names a series of another study (a sender's UID collision) is listed too: one series
    never mixes two studies' images."""
    by_series: dict[str, dict[str, Instance]] = {}
    dups: dict[tuple[bool, str, str, str], list[Instance]] = {}  # (same bytes, series, where they are, the first)
    clashes: list[Instance] = []  # of a series first read in another study
    for inst in instances:
        seen = by_series.setdefault(inst.series_uid, {})
        if seen and next(iter(seen.values())).study_uid != inst.study_uid:
            clashes.append(inst)
            continue
        if inst.sop_uid in seen:
            first = seen[inst.sop_uid]
            where = (inst.digest == first.digest, inst.series_uid, _container(inst.source), _container(first.source))
            dups.setdefault(where, []).append(inst)
            continue
        seen[inst.sop_uid] = inst
    errors: list[FileError] = []
    for (same, series_uid, here, first), copies in dups.items():  # one row per folder of copies, not per file
        name = copies[0].source.name if len(copies) == 1 else here
        what = (f"{len(copies)} duplicate instance(s) (SOP Instance UIDs already read from {first}); skipped"
                if same else f"{len(copies)} conflicting instance(s): the SOP Instance UIDs of files read from "
                f"{first} with other bytes; the first read is used, these are skipped")
        errors.append(FileError(name, what, series_uid, copies[0].study_uid,
                                copies[0].sop_uid if len(copies) == 1 else ""))
    errors += [FileError(f.source.name, "its Series Instance UID names a series of another study, read first; "
                         "skipped (a Series Instance UID names one series of one study)", f.series_uid, f.study_uid,
                         f.sop_uid) for f in clashes]
    groups = []
    for series_uid, members in by_series.items():
        ordered = tuple(sorted(members.values(), key=lambda i: i.sop_uid))
        groups.append(SeriesGroup(ordered[0].study_uid, series_uid, ordered))
    groups.sort(key=lambda g: (g.study_uid, _num(g.first.series_number), g.series_uid))
    return groups, errors


def _container(src: Source) -> str:
    """The folder (or zip file) holding a source."""
    return src.path if src.member is not None else str(Path(src.path).parent)


def _num(text: str) -> tuple:
    try:
        return (0, int(text))
    except ValueError:
        return (1, 0)


def discover(paths: Iterable[Path], key: bytes, skip: Iterable[Path] = (),
             cache: dict | None = None, on_file: Callable[[str], None] | None = None, stats: dict | None = None
             ) -> tuple[list[SeriesGroup], list[FileError], dict]:
    """Scan everything under ``paths``. ``cache`` maps a file's identity to an earlier scan, so a
    resumed run does not re-read unchanged files; the updated cache is returned.

    ``stats`` (a dict) receives ``files`` (files and zip members examined), ``unusable`` (those that are not
    analysable DICOM; at most ``files``; a folder not read is listed but is neither) and ``duplicates`` (copies of
    an instance already read, and instances of another study's series UID, skipped). Duplicates are reported one
    error row per folder, so the errors list is not a file count."""
    cache = dict(cache or {})
    new_cache: dict = {}
    instances: list[Instance] = []
    errors: list[FileError] = []
    examined = 0
    for item in iter_sources(paths, skip):
        examined += not (isinstance(item, FileError) and item.folder)
        if isinstance(item, FileError):
            errors.append(item)
            continue
        ident = _cache_key(item)
        hit = cache.get(ident) if ident else None
        if hit is not None:
            found = _from_cache(item, hit)
        else:
            found = scan(item, key)
        if ident:
            new_cache[ident] = _to_cache(found)
        (instances if isinstance(found, Instance) else errors).append(found)
        if on_file:
            on_file(item.name)
    groups, dup_errors = group(instances)
    if stats is not None:
        stats.update(files=examined, unusable=sum(not e.folder for e in errors),
                     duplicates=len(instances) - sum(len(g.instances) for g in groups))
    return groups, errors + dup_errors, new_cache


def _cache_key(src: Source) -> str | None:
    """A file's identity: its path, inode, size, modification and change times. The change time cannot be set
    back (``touch -r`` and ``rsync -t`` can set the modification time), so a file replaced by one of the same size
    and time stamp is scanned again."""
    try:
        st = os.stat(src.path)
    except OSError:
        return None
    return f"{src.path}\0{src.member or ''}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"


def _to_cache(found: Instance | FileError) -> dict:
    if isinstance(found, FileError):
        return {"error": found.as_row()}
    d = asdict(found)
    d.pop("source")
    d["geometry"] = found.geometry.to_json()
    return {"instance": d, "bare": found.source.bare}


def _from_cache(src: Source, hit: dict) -> Instance | FileError:
    """The earlier scan of an unchanged file (a cache of another version is never loaded: ``RunState``)."""
    if "error" in hit:
        return FileError(**hit["error"])
    d = dict(hit["instance"])
    d["geometry"] = SliceGeometry.from_json(d["geometry"])
    return Instance(source=Source(src.path, src.member, bare=bool(hit.get("bare"))), **d)
