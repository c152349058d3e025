"""Real peers on localhost: `svdmark serve` as a subprocess, dcmtk storescp/storescu/echoscu.

Shared by the integration, interop and CLI tests and by bench/.

dcmtk is called by absolute path: pynetdicom installs console scripts of the
same names into the venv.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from svdmark.export.requestor import responses_to_sender

from tests import journaldb

DCMTK = Path("/usr/bin")
# dcmtk (storescu, storescp, dcmsend, and Orthanc, which is built on it) sends with TCP_NODELAY when this is set,
# as a PACS tuned for throughput does and as bench/ does. Without it each of its small writes waits for the peer's
# delayed ACK (40-90 ms per object on localhost: one end-to-end test took 29 s without it, 21 s with it).
os.environ.setdefault("TCP_NODELAY", "1")
SVDMARK = [sys.executable, "-m", "svdmark.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def associate(ae, port: int, aet: str = "SVDMARK", **kw):
    """``ae.associate`` to localhost as svdmark's own sender associates: a response goes to the ``send_*``
    that waits for it, never to pynetdicom's reactor (svdmark.export.requestor), so a test's SCU does not
    lose a response and wait out its DIMSE timeout on a loaded machine."""
    assoc = ae.associate("127.0.0.1", port, ae_title=aet, **kw)
    if assoc.is_established:
        responses_to_sender(assoc)
    return assoc


def echo_ok(port: int, aet: str) -> bool:
    r = subprocess.run([str(DCMTK / "echoscu"), "-aec", aet, "-to", "2", "127.0.0.1", str(port)],
                       capture_output=True, timeout=20)
    return r.returncode == 0


def wait_for_echo(port: int, aet: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering C-ECHO")
        if echo_ok(port, aet):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{aet} on port {port} did not answer C-ECHO within {timeout} s")


# storescu proposes uncompressed syntaxes only unless told; one flag per compressed syntax
STORESCU_TS_FLAG = {
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG lossless, process 14, SV1
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.5": "-xr",  # RLE lossless
    "1.2.840.10008.1.2.1.99": "-xd",  # deflated explicit VR little endian
}


def _transfer_syntax(path: Path) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    except Exception:  # not DICOM: let storescu report it
        return ""


def storescu_commands(files, port: int, aet: str = "SVDMARK", calling: str = "STORESCU",
                      extra: tuple[str, ...] = ()) -> list[list[str]]:
    """One storescu command line per transfer syntax among ``files``."""
    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(STORESCU_TS_FLAG.get(_transfer_syntax(Path(f)), ""), []).append(str(f))
    return [[str(DCMTK / "storescu"), "-aet", calling, "-aec", aet, "-nh", *([flag] if flag else []), *extra,
             "127.0.0.1", str(port), *group] for flag, group in groups.items()]


def storescu(files, port: int, aet: str = "SVDMARK", calling: str = "STORESCU", check: bool = True,
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Send files with dcmtk storescu, one association per transfer syntax present.

    storescu exits 0 even when a store fails, so with ``check`` its error lines count as failure.
    """
    result = None
    for cmd in storescu_commands(files, port, aet, calling, extra):
        result = run_storescu(cmd, check)
    assert result is not None, "no files to send"
    return result


def run_storescu(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    """One storescu command line (:func:`storescu_commands`); with ``check`` its error lines count as failure."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    failed = result.returncode != 0 or any(line.startswith("E:") for line in result.stderr.splitlines())
    if check and failed:
        raise AssertionError(f"storescu failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


class StoreSCP:
    """dcmtk storescp writing every received object into ``folder``.

    ``log_receptions`` (the tests' default) runs a shell per received object to log its name, so a
    duplicate delivery is visible even though the file is overwritten; without it storescp runs as
    fast as it can (:data:`FASTEST`), as the benchmark's peer.
    """

    # +B: bit-preserving, the received stream goes to the file as it arrives, never parsed and re-encoded;
    # -dhl: no reverse DNS lookup per association; -pdu: the largest receive PDU storescp allows;
    # --fork: a process per association, so concurrent associations are served side by side, not in turn.
    # Interleaved runs, 400 512x512 CT instances (bench/README.md): 1241/868 inst/s at 1/4 associations
    # without --fork, 1259/964 with it; the tests' -xcr logging 526/447.
    FASTEST = ("+B", "-dhl", "-pdu", "131072", "--fork")

    def __init__(self, folder: Path, port: int | None = None, aet: str = "CEOPACS", log_receptions: bool = True,
                 options: tuple[str, ...] = ()):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.aet = aet
        self.log_receptions = log_receptions
        self.options = options
        self.proc: subprocess.Popen | None = None
        self.received_log = folder.parent / f"{folder.name}-received.log"

    def start(self) -> "StoreSCP":
        # -xs: storescp waits for each command before it reads the next request, so the log is in reception
        # order (without it each runs in the background, and under load a later one can append first)
        log = ("-xcr", f"echo #f >> {self.received_log}", "-xs") if self.log_receptions else ()
        self.proc = subprocess.Popen(
            [str(DCMTK / "storescp"), "-aet", self.aet, "-od", str(self.folder), "+xa", "-uf", *self.options, *log,
             str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_echo(self.port, self.aet, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def files(self) -> list[Path]:
        """The received files. With ``log_receptions`` only those whose reception storescp has logged: its
        on-reception command runs after the file is closed, so a polling reader never parses a file half written.
        That command runs after the C-STORE response: a file can be complete a moment before it is listed, so
        read once a send has returned only through ``wait_until``. (A re-delivery overwrites a
        listed file in place; the tests that provoke one read ``receptions()``.)"""
        present = sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not self.log_receptions:
            return present
        done = set(self.receptions())
        return [p for p in present if p.name in done]

    def receptions(self) -> list[str]:
        """File names in order of reception, duplicates included."""
        return self.received_log.read_text().split() if self.received_log.exists() else []

    def datasets(self) -> list:
        import pydicom

        return [pydicom.dcmread(p) for p in self.files()]


ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian's orthanc-dicomweb
# ``settings`` for an Orthanc that serves DICOMweb (STOW-RS, QIDO/WADO-RS) at /dicom-web/
DICOMWEB_SETTINGS = {"Plugins": [str(DICOMWEB)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}


class Orthanc:
    """Orthanc (Debian's package) on free localhost ports. Unless ``settings`` say otherwise a plain storage SCP:
    its default SQLite index and storage, no plugins, no authentication; ``auth`` (user, password) registers that
    user and sends it with every REST call. Every test's Orthanc is this one, configured by its ``settings``.

    ``free_port`` can only offer a port, not hold it: another test process may take it first. :meth:`started`
    (a new Orthanc) then moves to new ports; :meth:`start` keeps its ports, because whoever sends to this
    Orthanc was told them (a restart, or an Orthanc configured first and started later)."""

    def __init__(self, root: Path, aet: str = "ORTHANC", settings: dict | None = None,
                 auth: tuple[str, str] | None = None, verbose: bool = False):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.settings = settings or {}
        self.auth = auth
        self.verbose = verbose
        self.config = root / "orthanc.json"
        self.log = root / "orthanc.log"
        self.proc: subprocess.Popen | None = None
        self._configure()

    def _configure(self) -> None:
        self.dicom_port, self.http_port = free_port(), free_port()
        cfg = {"Name": "svdmark-peer", "DicomAet": self.aet, "RemoteAccessAllowed": False,
               "AuthenticationEnabled": self.auth is not None, "Plugins": [], **self.settings,
               "StorageDirectory": str(self.root / "db"), "IndexDirectory": str(self.root / "db"),
               "DicomPort": self.dicom_port, "HttpPort": self.http_port}
        if self.auth:
            cfg["RegisteredUsers"] = {self.auth[0]: self.auth[1]}
        self.aet = cfg["DicomAet"]
        self.config.write_text(json.dumps(cfg, indent=2))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def started(cls, root: Path, attempts: int = 3, **kw) -> "Orthanc":
        """A new Orthanc, started; on new ports while another test process took the offered ones first."""
        o = cls(root, **kw)
        for attempt in range(attempts):
            seen = o.log.stat().st_size if o.log.exists() else 0
            try:
                return o.start()
            except RuntimeError:
                if "already in use" not in o.log_text(seen) or attempt == attempts - 1:
                    raise
                o._configure()
        raise AssertionError("unreachable")

    def start(self) -> "Orthanc":
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen([str(ORTHANC), *(["--verbose"] if self.verbose else []), str(self.config)],
                                         stdout=logf, stderr=subprocess.STDOUT, cwd=self.root)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                return self.request("/system") is not None
            except OSError:  # URLError and connection errors: not listening yet
                return False

        try:
            wait_until(up, 60, "Orthanc's REST API", interval=0.3)
            wait_for_echo(self.dicom_port, self.aet, proc=self.proc)
        except BaseException:  # not up: leave no process behind
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_process(self.proc, 60)

    def request(self, path: str, data: bytes | None = None) -> bytes:
        headers = {}
        if self.auth:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    def get(self, path: str):
        """The REST answer, as JSON where it is JSON (``/instances/ID/metadata/NAME`` is plain text)."""
        body = self.request(path).decode()
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return body

    def store(self, path: Path) -> None:
        self.request("/instances", data=path.read_bytes())

    def instance_count(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def sop_uids(self) -> set[str]:
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in self.get("/instances?expand")}

    def log_text(self, since: int = 0) -> str:
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")


class Svdmark:
    """`svdmark serve` in a subprocess, with kill -9 and restart."""

    def __init__(self, data_dir: Path, destinations: list[str], port: int | None = None,
                 extra: tuple[str, ...] = ("--settle-seconds", "1", "--fallback-seconds", "15"),
                 env: dict | None = None, roles: tuple[str, ...] = ()):
        self.env = env or {}
        self.roles = roles  # empty: all (svdmark serve's default)
        self.data_dir = data_dir
        self.port = port or free_port()
        self.destinations = destinations
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"{data_dir.name}-serve.log"

    def start(self) -> "Svdmark":
        cmd = [*SVDMARK, "serve", "--port", str(self.port), "--ae-title", "SVDMARK", "--data-dir", str(self.data_dir),
               "--host", "127.0.0.1", *self.extra]
        for d in self.destinations:
            cmd += ["--destination", d]
        if self.roles:
            cmd += ["--roles", ",".join(self.roles)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", **journaldb.env_for(self.data_dir), **self.env)
        seen = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env)
        if not self.roles or "receive" in self.roles:
            wait_for_echo(self.port, "SVDMARK", proc=self.proc)
        else:  # no listener: wait for the start line in its log
            def started() -> bool:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"svdmark serve exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
                return self.log.exists() and "started" in self.log.read_bytes()[seen:].decode(errors="replace")
            wait_until(started, 60, "svdmark serve to start", interval=0.2)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, 30)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*SVDMARK, *args, "--data-dir", str(self.data_dir)], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, **journaldb.env_for(self.data_dir), **self.env))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def stop_process(proc: subprocess.Popen | None, timeout: float = 30.0) -> None:
    """SIGTERM, wait ``timeout`` seconds, then SIGKILL: every peer helper stops its process this way."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def send_studies(studies, port: int, **kw) -> None:
    files = sorted(p for s in studies for p in Path(s.out_dir).rglob("*.dcm"))
    storescu(files, port, **kw)


def results_by_kind(scp: "StoreSCP") -> dict[str, list]:
    out: dict[str, list] = {"SR": [], "SEG": [], "OT": []}
    for ds in scp.datasets():
        out.setdefault(str(ds.Modality), []).append(ds)
    return out


def source_series_of(ds) -> set[str]:
    """The source series an SR/SEG/SC refers to (evidence, referenced series, or same-series lookups)."""
    uids = set()
    for item in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
        for s in item.get("ReferencedSeriesSequence", []):
            uids.add(str(s.SeriesInstanceUID))
    for s in ds.get("ReferencedSeriesSequence", []):
        uids.add(str(s.SeriesInstanceUID))
    return uids


def healthz(port: int) -> tuple[int, dict]:
    """(HTTP status, body) of the service's /healthz; (0, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return 0, {}
