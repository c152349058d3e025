"""Configuration: one frozen object. TOML file < environment < command-line flags.

Example ``svdmark.toml``::

    [listener]
    host = "0.0.0.0"
    port = 11112
    ae_title = "SVDMARK"
    allow_calling_ae = ["CT01", "PACS"]
    request_timeout = 5.0                 # TLS handshake + A-ASSOCIATE-RQ must arrive within this
    max_connections_per_host = 16         # TCP connections from one address, associated or not
    unsupported_sop_class = "discard"     # SR/PR/KO... of a forwarded study: "discard" (0x0000) or "refuse" (0x0122)

    [storage]
    data_dir = "/var/lib/svdmark"

    [assemble]
    settle_seconds = 2.0
    fallback_seconds = 60.0
    incomplete_max_wait_seconds = 600.0   # a series short of its declared count (or with a gap) waits this long
    incomplete_policy = "analyse"         # then: "analyse" with an "incomplete series" warning, or "reject"

    [[destinations]]
    ae_title = "PACS"
    host = "10.0.0.5"
    port = 104
    outputs = ["sr", "seg", "summary"]   # the output profile of this destination
    tls = false                           # DICOM TLS to this destination (uses [tls] ca/cert/key)

    [[destinations]]                      # DICOMweb STOW-RS (svdmark.export.stow), same outbox
    kind = "stow"
    url = "https://pacs.example.org/dicom-web/studies"
    username = "svdmark"                  # basic auth; or token_file / token_env for a bearer token
    password_file = "/etc/svdmark/stow-password"   # or password_env = "SVDMARK_STOW_PASSWORD"
    ca_file = "/etc/svdmark/tls/pacs-ca.crt"       # optional; tls_verify = true by default

    [tls]                                 # DICOM TLS (listener, and destinations with tls = true)
    cert = "/etc/svdmark/tls/svdmark.crt" # PEM; with key set, the listener speaks TLS only
    key = "/etc/svdmark/tls/svdmark.key"
    ca = "/etc/svdmark/tls/ca.crt"        # trusted CA bundle for peers' certificates
    require_client_cert = true            # mutual TLS: refuse callers without a certificate from ca
    verify_hostname = true                # exporter checks the destination's name/IP against its certificate

    [metrics]                             # /healthz and Prometheus /metrics (off unless port is set)
    host = "127.0.0.1"
    port = 9110

    [retention]                           # svdmark purge run by the service itself (off unless days is set)
    older_than_days = 30                  # the images of series done with for this long, then delivered results
    keep_results = false                  # true: the images only
    every_hours = 24                      # how often; the assembly leader runs it

Environment variables: ``SVDMARK_HOST``, ``SVDMARK_PORT``, ``SVDMARK_AE_TITLE``,
``SVDMARK_DATA_DIR``, ``SVDMARK_DESTINATIONS`` (comma-separated ``AET@HOST:PORT``),
``SVDMARK_ALLOW_CALLING_AE`` (comma-separated), ``SVDMARK_SETTLE_SECONDS``,
``SVDMARK_FALLBACK_SECONDS``, ``SVDMARK_MODELS_DIR``, ``SVDMARK_TLS_CERT``, ``SVDMARK_TLS_KEY``,
``SVDMARK_TLS_CA``, ``SVDMARK_TLS_REQUIRE_CLIENT_CERT``, ``SVDMARK_METRICS_HOST``, ``SVDMARK_METRICS_PORT``.
The others (``SVDMARK_CONFIG``, ``SVDMARK_LOG_FORMAT``, ``SVDMARK_TEMPLATES``, ``SVDMARK_INFER_THREADS``,
``SVDMARK_TRT_CACHE``, ``SVDMARK_PSEUDONYM_KEY``, and a STOW destination's ``password_env`` / ``token_env``)
are read by the small functions at the end of this module.

``allow_calling_ae`` entries are ``AET`` or ``AET@HOST`` (HOST: an IP address or a name, which
is resolved when the association arrives); a host-bound entry admits that AE title only from there.

Why the layering is our own code and not pydantic-settings (considered for issue 12): it is two
tables (``_FILE_KEYS``: TOML ``section.key`` → field, ``_ENV_KEYS``: variable → field), one
converter (``_convert``) and ``load`` — about 75 lines — over a frozen dataclass whose
``validate`` holds the cross-field rules (TLS cert with key, settle <= fallback, AE titles).
pydantic-settings would need a nested model per TOML section plus a custom TOML source and
per-field aliases to keep today's flat ``SVDMARK_*`` names and ``[section] key`` file, would not
remove ``validate``, and would add pydantic and its compiled core to a hospital service's
dependencies; errors here already name the file, section and key or the variable.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from .domain import FULL_PROFILE, OutputKind
from .errors import ConfigError

UNSUPPORTED_POLICIES = ("discard", "refuse")  # [listener] unsupported_sop_class
_AE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")
_DEST_RE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


def _check_ae(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} {value!r} is not a valid AE title (a string of 1-16 printable ASCII characters)")
    value = value.strip()
    if not value or not _AE_RE.match(value) or "\\" in value:
        raise ConfigError(f"{what} {value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """A log level's name as logging knows it (``warn`` is WARNING); argparse type and config check."""
    level = str(text).strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {text!r}")
    return level


def _whole(value: Any) -> int:
    """``value`` as an int; ValueError or TypeError for true, 104.7 and text that is no whole number."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _check_port(value: Any, what: str, lowest: int = 0) -> int:
    """A whole port number from ``lowest`` (0: pick a free one, for a listener) to 65535; 104.7 or true is none."""
    try:
        port = _whole(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {value!r} is not a port number") from None
    if not lowest <= port <= 65535:
        raise ConfigError(f"{what} {port} is outside {lowest}-65535")
    return port


@dataclass(frozen=True)
class Destination:
    """A C-STORE destination and which result objects it receives."""

    ae_title: str
    host: str
    port: int
    outputs: frozenset[OutputKind] = FULL_PROFILE
    tls: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", output_profile(self.outputs))

    @property
    def name(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str, outputs: Iterable[str] | None = None) -> "Destination":
        m = _DEST_RE.match(text.strip())
        if not m:
            raise ConfigError(f"destination {text!r} is not of the form AET@HOST:PORT")
        return cls(
            ae_title=_check_ae(m["aet"], "destination AE title"),
            host=m["host"].strip("[]"),
            port=_check_port(m["port"], "destination port", lowest=1),
            outputs=FULL_PROFILE if outputs is None else outputs,  # checked by __post_init__
        )

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> "Destination":
        known = {"ae_title", "host", "port", "outputs", "tls"}
        unknown = sorted(set(d) - known)
        if unknown:  # a typo ("output", "tsl") would otherwise send everything, or send without TLS
            raise ConfigError(f"destination: unknown key(s) {unknown}; known: {sorted(known | {'kind'})}")
        missing = [k for k in ("ae_title", "host", "port") if k not in d]
        if missing:
            raise ConfigError(f"destination entry lacks {', '.join(map(repr, missing))}: {dict(d)}")
        outputs = d.get("outputs", FULL_PROFILE)
        if isinstance(outputs, str):
            raise ConfigError(f"destination outputs {outputs!r} must be a list, such as [\"sr\", \"seg\"]")
        if not isinstance(d.get("tls", False), bool):
            raise ConfigError(f"destination tls {d['tls']!r} must be true or false")
        host = str(d["host"]).strip()
        if not host:
            raise ConfigError(f"destination {d['ae_title']!r}: host is empty")
        return cls(ae_title=_check_ae(d["ae_title"], "destination AE title"), host=host,
                   port=_check_port(d["port"], "destination port", lowest=1), outputs=outputs,
                   tls=bool(d.get("tls", False)))


_SECRET_KEYS = ("password_file", "password_env", "token_file", "token_env")


@dataclass(frozen=True)
class StowDestination:
    """A DICOMweb STOW-RS destination (``kind = "stow"``), delivered by the same outbox as C-STORE.

    Credentials are never held here: only where to read them (a file, or an environment variable),
    read again for each delivery round by :mod:`svdmark.export.stow`, so they never reach a log,
    a ``repr`` or the journal, and a rotated password needs no restart.
    """

    url: str
    outputs: frozenset[OutputKind] = FULL_PROFILE
    username: str | None = None  # HTTP basic auth, with password_file or password_env
    password_file: Path | None = None
    password_env: str | None = None
    token_file: Path | None = None  # bearer token, instead of basic auth
    token_env: str | None = None
    ca_file: Path | None = None  # CA bundle for an HTTPS url (else $REQUESTS_CA_BUNDLE, else certifi's)
    tls_verify: bool = True
    timeout: float = 60.0
    tls: ClassVar[bool] = False  # DICOM TLS ([tls]) is C-STORE's; HTTPS is verified per destination

    def __post_init__(self) -> None:
        object.__setattr__(self, "outputs", output_profile(self.outputs))

    @property
    def name(self) -> str:
        return f"stow:{self.url}"

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> "StowDestination":
        known = {"kind", "url", "outputs", "username", "ca_file", "tls_verify", "timeout", *_SECRET_KEYS}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"stow destination: unknown key(s) {unknown}; known: {sorted(known)}")
        url = str(d.get("url", "")).strip()
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"stow destination url {url!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise ConfigError("stow destination url must not hold credentials: use username with password_file "
                              "or password_env, or token_file / token_env")
        given = {k: d[k] for k in _SECRET_KEYS if d.get(k)}
        basic = {k for k in given if k.startswith("password")}
        bearer = {k for k in given if k.startswith("token")}
        if len(basic) > 1 or len(bearer) > 1 or (basic and bearer):
            raise ConfigError(f"stow destination {url}: give one of {', '.join(_SECRET_KEYS)}, not {sorted(given)}")
        if bool(basic) != bool(d.get("username")):
            raise ConfigError(f"stow destination {url}: basic auth needs both username and password_file "
                              "or password_env")
        for k in ("password_file", "token_file"):
            if k in given and not Path(str(given[k])).expanduser().is_file():
                raise ConfigError(f"stow destination {url}: {k} {given[k]} does not exist")
        for k in ("password_env", "token_env"):
            if k in given and not os.environ.get(str(given[k])):
                raise ConfigError(f"stow destination {url}: {k}: environment variable {given[k]} is not set")
        ca = Path(str(d["ca_file"])).expanduser() if d.get("ca_file") else None
        if ca is not None and not ca.is_file():
            raise ConfigError(f"stow destination {url}: ca_file {ca} does not exist")
        timeout = _convert(d.get("timeout", 60.0), "float", f"stow destination {url} timeout")
        if timeout <= 0:
            raise ConfigError(f"stow destination {url}: timeout must be more than 0")
        path = lambda k: Path(str(given[k])).expanduser() if k in given else None  # noqa: E731
        return cls(url=url, outputs=d.get("outputs", FULL_PROFILE),
                   username=str(d["username"]) if d.get("username") else None,
                   password_file=path("password_file"), password_env=given.get("password_env"),
                   token_file=path("token_file"), token_env=given.get("token_env"), ca_file=ca,
                   tls_verify=_convert(d.get("tls_verify", True), "bool", f"stow destination {url} tls_verify"),
                   timeout=timeout)


AnyDestination = Destination | StowDestination


def destination_from_mapping(d: Any) -> AnyDestination:
    """One ``[[destinations]]`` entry: ``kind = "cstore"`` (the default) or ``"stow"``."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"each destination is a [[destinations]] table (double brackets), not {d!r}")
    kind = str(d.get("kind", "cstore"))
    if kind == "stow":
        return StowDestination.from_mapping(d)
    if kind != "cstore":
        raise ConfigError(f"destination kind {kind!r} unknown; choose 'cstore' or 'stow'")
    return Destination.from_mapping({k: v for k, v in d.items() if k != "kind"})


def output_profile(names: Iterable[str]) -> frozenset[OutputKind]:
    """A destination's ``outputs`` (its output profile) as :class:`OutputKind` values; a name that is not
    ``sr``, ``seg`` or ``summary`` is a :class:`ConfigError`."""
    allowed = OutputKind.profile_kinds()
    unknown = sorted(str(n) for n in names if n not in allowed)
    if unknown:
        raise ConfigError(f"destination outputs {unknown} unknown; choose from {[str(k) for k in allowed]}")
    return frozenset(OutputKind(n) for n in names)


ROLES = ("receive", "assemble", "work", "export")  # svdmark serve --roles: all four unless told otherwise


@dataclass(frozen=True)
class Config:
    host: str = "0.0.0.0"
    port: int = 11112
    ae_title: str = "SVDMARK"
    data_dir: Path = Path("svdmark-data")
    # shared between processes (docs/scaling.md); None: under data_dir (the embedded default)
    journal: str | None = None  # sqlite:///PATH or postgresql://USER@HOST:PORT/DB
    spool: Path | None = None
    roles: tuple[str, ...] = ROLES  # what this process runs (svdmark serve --roles)
    lease_seconds: float = 60.0  # a running job / delivery in flight is this process's while it heartbeats
    destinations: tuple[AnyDestination, ...] = ()
    allow_calling_ae: tuple[str, ...] = ()
    # association policy
    max_associations: int = 8
    max_pdu: int = 262_144
    acse_timeout: float = 30.0  # read from old files, no longer used: the listener's ARTIM is request_timeout
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    max_dataset_bytes: int = 512 * 1024 * 1024
    request_timeout: float = 5.0  # seconds a new connection has for its TLS handshake and A-ASSOCIATE-RQ
    max_connections_per_host: int = 16  # open TCP connections from one address, negotiated or not
    unsupported_sop_class: str = "discard"  # other storage SOP classes: "discard" (0x0000) or "refuse" (0x0122)
    # assembly
    settle_seconds: float = 2.0
    fallback_seconds: float = 60.0
    incomplete_max_wait_seconds: float = 600.0  # see svdmark.completion (never less than fallback)
    incomplete_policy: str = "analyse"  # "analyse" (with the warning) | "reject" (job failed, not analysed)
    # analysis
    workers: int = 1
    models_dir: Path | None = None
    routing_file: Path | None = None
    rules_file: Path | None = None
    # evidence flags: when a rule's flag is attached (svdmark.rules.applicability): "condition"
    # (the rule's population condition on the study header must hold), "always" or "never";
    # flag_conditions replaces a rule's packaged condition, by rule id ([flags.conditions.<id>])
    flag_applicability: str = "condition"
    flag_conditions: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    # export
    # tries per object and destination before a dead letter: with the back-off below about 4-8 hours of retries,
    # so a PACS restart or an evening's maintenance does not leave every result of it for `outbox resend`
    export_max_attempts: int = 100
    export_backoff_seconds: float = 2.0
    export_backoff_cap_seconds: float = 300.0
    # logging ([logging] format: text or json; --log-format and $SVDMARK_LOG_FORMAT win over it)
    log_level: str = "INFO"
    log_format: str | None = None
    # DICOM TLS (see svdmark.tls)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_require_client_cert: bool = False
    tls_verify_hostname: bool = True
    # health endpoint and Prometheus metrics (see svdmark.health); off unless a port is set
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    # retention run by serve (svdmark.retention; svdmark purge is the same run by hand); off unless days are set
    retention_days: float | None = None
    retention_keep_results: bool = False
    retention_every_hours: float = 24.0

    @property
    def tls_listener(self) -> bool:
        return self.tls_cert is not None

    @property
    def journal_path(self) -> Path:
        """The embedded SQLite journal's file (used unless ``journal`` names another)."""
        return self.data_dir / "journal.sqlite"

    @property
    def journal_url(self) -> str:
        """The journal to open: ``journal`` if set, else the SQLite file under ``data_dir``."""
        return self.journal or f"sqlite:///{self.journal_path.resolve()}"

    @property
    def journal_is_local_file(self) -> bool:
        return self.journal is None or self.journal.startswith("sqlite:") or "://" not in self.journal

    @property
    def heartbeat_seconds(self) -> float:
        """How often a process renews its leases and its row in the process table (several per lease)."""
        return min(5.0, self.lease_seconds / 4)

    @property
    def spool_dir(self) -> Path:
        return self.spool if self.spool is not None else self.data_dir / "spool"

    def with_overrides(self, **changes: Any) -> "Config":
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Config":
        _check_ae(self.ae_title, "listener AE title")
        _check_port(self.port, "listener port")
        for entry in self.allow_calling_ae:
            aet, _, host = entry.rpartition("@") if "@" in entry else (entry, "", "")
            _check_ae(aet, "allowed calling AE title")
            if "@" in entry and not host.strip():
                raise ConfigError(f"allowed calling AE {entry!r}: the host after '@' is empty")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("[tls] cert and key must be set together")
        if self.tls_require_client_cert and (self.tls_cert is None or self.tls_ca is None):
            raise ConfigError("[tls] require_client_cert needs cert, key and ca")
        if any(d.tls for d in self.destinations) and self.tls_ca is None:
            raise ConfigError("a destination has tls = true, which needs [tls] ca to verify it")
        for p in (self.tls_cert, self.tls_key, self.tls_ca):
            if p is not None and not Path(p).is_file():
                raise ConfigError(f"TLS file {p} does not exist")
        if self.metrics_port is not None:
            _check_port(self.metrics_port, "metrics port")
        if self.settle_seconds < 0 or self.fallback_seconds < self.settle_seconds:
            raise ConfigError(
                f"need 0 <= settle_seconds ({self.settle_seconds}) <= fallback_seconds ({self.fallback_seconds})"
            )
        if self.log_format is not None and self.log_format not in ("text", "json"):
            raise ConfigError(f"[logging] format {self.log_format!r}: choose 'text' or 'json'")
        if self.incomplete_policy not in ("analyse", "reject"):
            raise ConfigError(f"incomplete_policy {self.incomplete_policy!r}: choose 'analyse' or 'reject'")
        for name in ("dimse_timeout", "network_timeout", "export_backoff_seconds", "export_backoff_cap_seconds"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"{name} ({value}) must be more than 0")
        if self.incomplete_max_wait_seconds < 0:  # 0: no longer than the fallback (svdmark.completion)
            raise ConfigError(f"incomplete_max_wait_seconds ({self.incomplete_max_wait_seconds}) must be 0 or more")
        if self.max_pdu < 0:
            raise ConfigError(f"max_pdu ({self.max_pdu}) must be 0 (no limit) or more")
        if self.workers < 1:
            raise ConfigError(f"workers ({self.workers}) must be at least 1")
        try:
            log_level(self.log_level)
        except ConfigError as exc:
            raise ConfigError(f"[logging] level: {exc}") from None
        if self.max_associations < 1:
            raise ConfigError("max_associations must be at least 1")
        if self.max_connections_per_host < 1:
            raise ConfigError("max_connections_per_host must be at least 1")
        if not 0 < self.request_timeout <= 120:
            raise ConfigError(f"request_timeout ({self.request_timeout}) must be more than 0 and at most 120 s")
        if self.unsupported_sop_class not in UNSUPPORTED_POLICIES:
            raise ConfigError(f"unsupported_sop_class must be one of {', '.join(UNSUPPORTED_POLICIES)}, "
                              f"not {self.unsupported_sop_class!r}")
        if self.export_max_attempts < 1:
            raise ConfigError("export_max_attempts must be at least 1")
        if self.retention_days is not None and not self.retention_days >= 0:
            raise ConfigError(f"[retention] older_than_days ({self.retention_days}) must be 0 or more")
        if not 0 < self.retention_every_hours <= 8784:
            raise ConfigError(f"[retention] every_hours ({self.retention_every_hours}) must be more than 0 and at "
                              "most 8784 (a year)")
        unknown_roles = sorted(set(self.roles) - set(ROLES))
        if not self.roles or unknown_roles:
            raise ConfigError(f"roles {list(self.roles)}: choose one or more of {', '.join(ROLES)}")
        if self.lease_seconds < 2:
            raise ConfigError(f"lease_seconds ({self.lease_seconds}) must be at least 2")
        if self.journal is not None:
            from .journal_engine import EngineError, parse_url

            try:
                parse_url(self.journal)
            except EngineError as exc:
                raise ConfigError(str(exc)) from None
        from .rules.applicability import check_mode

        check_mode(self.flag_applicability)
        return self


_FILE_KEYS: dict[str, tuple[str, str]] = {
    # (section, key) -> field
    "listener.host": ("host", "str"),
    "listener.port": ("port", "int"),
    "listener.ae_title": ("ae_title", "str"),
    "listener.allow_calling_ae": ("allow_calling_ae", "list"),
    "listener.max_associations": ("max_associations", "int"),
    "listener.max_pdu": ("max_pdu", "int"),
    "listener.acse_timeout": ("acse_timeout", "float"),
    "listener.dimse_timeout": ("dimse_timeout", "float"),
    "listener.network_timeout": ("network_timeout", "float"),
    "listener.max_dataset_bytes": ("max_dataset_bytes", "int"),
    "listener.request_timeout": ("request_timeout", "float"),
    "listener.max_connections_per_host": ("max_connections_per_host", "int"),
    "listener.unsupported_sop_class": ("unsupported_sop_class", "str"),
    "storage.data_dir": ("data_dir", "path"),
    "storage.journal": ("journal", "str"),
    "storage.spool": ("spool", "path"),
    "service.roles": ("roles", "list"),
    "service.lease_seconds": ("lease_seconds", "float"),
    "assemble.settle_seconds": ("settle_seconds", "float"),
    "assemble.fallback_seconds": ("fallback_seconds", "float"),
    "assemble.incomplete_max_wait_seconds": ("incomplete_max_wait_seconds", "float"),
    "assemble.incomplete_policy": ("incomplete_policy", "str"),
    "analysis.workers": ("workers", "int"),
    "analysis.models_dir": ("models_dir", "path"),
    "analysis.routing_file": ("routing_file", "path"),
    "analysis.rules_file": ("rules_file", "path"),
    "flags.applicability": ("flag_applicability", "str"),
    "export.max_attempts": ("export_max_attempts", "int"),
    "export.backoff_seconds": ("export_backoff_seconds", "float"),
    "export.backoff_cap_seconds": ("export_backoff_cap_seconds", "float"),
    "logging.level": ("log_level", "str"),
    "logging.format": ("log_format", "str"),
    "tls.cert": ("tls_cert", "path"),
    "tls.key": ("tls_key", "path"),
    "tls.ca": ("tls_ca", "path"),
    "tls.require_client_cert": ("tls_require_client_cert", "bool"),
    "tls.verify_hostname": ("tls_verify_hostname", "bool"),
    "metrics.host": ("metrics_host", "str"),
    "metrics.port": ("metrics_port", "int"),
    "retention.older_than_days": ("retention_days", "float"),
    "retention.keep_results": ("retention_keep_results", "bool"),
    "retention.every_hours": ("retention_every_hours", "float"),
}

_ENV_KEYS: dict[str, tuple[str, str]] = {
    "SVDMARK_HOST": ("host", "str"),
    "SVDMARK_PORT": ("port", "int"),
    "SVDMARK_AE_TITLE": ("ae_title", "str"),
    "SVDMARK_DATA_DIR": ("data_dir", "path"),
    "SVDMARK_JOURNAL": ("journal", "str"),
    "SVDMARK_SPOOL": ("spool", "path"),
    "SVDMARK_ROLES": ("roles", "list"),
    "SVDMARK_ALLOW_CALLING_AE": ("allow_calling_ae", "list"),
    "SVDMARK_SETTLE_SECONDS": ("settle_seconds", "float"),
    "SVDMARK_FALLBACK_SECONDS": ("fallback_seconds", "float"),
    "SVDMARK_MODELS_DIR": ("models_dir", "path"),
    "SVDMARK_LOG_LEVEL": ("log_level", "str"),
    "SVDMARK_FLAG_APPLICABILITY": ("flag_applicability", "str"),
    "SVDMARK_TLS_CERT": ("tls_cert", "path"),
    "SVDMARK_TLS_KEY": ("tls_key", "path"),
    "SVDMARK_TLS_CA": ("tls_ca", "path"),
    "SVDMARK_TLS_REQUIRE_CLIENT_CERT": ("tls_require_client_cert", "bool"),
    "SVDMARK_METRICS_HOST": ("metrics_host", "str"),
    "SVDMARK_METRICS_PORT": ("metrics_port", "int"),
}


def _convert(value: Any, kind: str, where: str) -> Any:
    try:
        if kind == "int":
            return _whole(value)
        if kind == "float":
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError(value)
            return float(value)
        if kind == "path":
            return Path(str(value)).expanduser()
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            return text in ("1", "true", "yes", "on")
        if kind == "list":
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())
        if isinstance(value, (list, dict, bool)):  # ae_title = ["X"] is no AE title "['X']"
            raise ValueError(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {kind}") from None


def load(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    **flags: Any,
) -> Config:
    """Build the configuration: defaults, then the TOML file, then env, then flags."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    destinations: list[Destination] = []
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for section, body in doc.items():
            if section == "destinations":
                if not isinstance(body, list):
                    raise ConfigError(f"{path}: write each destination as a [[destinations]] table (double "
                                      "brackets), one per destination")
                destinations = [destination_from_mapping(d) for d in body]
                continue
            if section == "flags" and isinstance(body, dict) and "conditions" in body:
                body = dict(body)
                conditions = body.pop("conditions")
                if not isinstance(conditions, dict):
                    raise ConfigError(f"{path}: [flags.conditions] must be tables named by rule id")
                values["flag_conditions"] = conditions
            if not isinstance(body, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
            for key, value in body.items():
                spec = _FILE_KEYS.get(f"{section}.{key}")
                if spec is None:
                    raise ConfigError(f"{path}: unknown setting [{section}] {key}")
                values[spec[0]] = _convert(value, spec[1], f"{path} [{section}] {key}")
    for var, (name, kind) in _ENV_KEYS.items():
        if env.get(var):
            values[name] = _convert(env[var], kind, f"environment {var}")
    if env.get("SVDMARK_DESTINATIONS"):
        destinations = [Destination.parse(t) for t in env["SVDMARK_DESTINATIONS"].split(",") if t.strip()]
    if flags.get("destinations"):
        destinations = [Destination.parse(t) for t in flags.pop("destinations")]
    else:
        flags.pop("destinations", None)
    if flags.get("allow_calling_ae"):
        flags["allow_calling_ae"] = tuple(flags["allow_calling_ae"])
    values.update({k: v for k, v in flags.items() if v is not None and v != []})
    values["destinations"] = tuple(destinations)
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    return Config(**values).validate()


# ============================================================================ environment, outside Config
# The variables that are not Config settings, each read by one small function here so that this module is
# the one place that names every SVDMARK_* variable (``load`` reads the Config ones: ``_ENV_KEYS`` and
# SVDMARK_DESTINATIONS). Read at call time, as before, so tests and ``svdmark analyze`` may set them.

CONFIG_FILE_ENV = "SVDMARK_CONFIG"  # the configuration file when --config is not given
LOG_FORMAT_ENV = "SVDMARK_LOG_FORMAT"  # text | json, when --log-format is not given
TEMPLATES_ENV = "SVDMARK_TEMPLATES"  # SR template folder instead of svdmark/data/sr_templates/
INFER_THREADS_ENV = "SVDMARK_INFER_THREADS"  # onnxruntime intra-op threads per session; SWI candidate filters
TRT_CACHE_ENV = "SVDMARK_TRT_CACHE"  # TensorRT engine cache folder
PSEUDONYM_KEY_ENV = "SVDMARK_PSEUDONYM_KEY"  # site key for the pseudonyms in logs and analyze's tables
MODELS_DIR_ENV = "SVDMARK_MODELS_DIR"  # model folder instead of svdmark/data/models/


def _env_text(name: str) -> str:
    """The variable's value without surrounding blanks; "" when unset."""
    return os.environ.get(name, "").strip()


def config_file_from_env() -> Path | None:
    """``$SVDMARK_CONFIG`` (``~`` expanded), or None when unset or empty."""
    text = os.environ.get(CONFIG_FILE_ENV)
    return Path(text).expanduser() if text else None


def log_format_from_env() -> str:
    """``$SVDMARK_LOG_FORMAT`` lower-cased, "" when unset (the caller checks the value)."""
    return _env_text(LOG_FORMAT_ENV).lower()


def templates_dir_from_env() -> Path | None:
    """``$SVDMARK_TEMPLATES``, or None when unset or empty."""
    text = os.environ.get(TEMPLATES_ENV)
    return Path(text) if text else None


def infer_threads_from_env() -> int | None:
    """``$SVDMARK_INFER_THREADS`` (at least 1), or None when unset or empty."""
    text = os.environ.get(INFER_THREADS_ENV)
    return max(1, int(text)) if text else None


def trt_cache_from_env() -> str | None:
    """``$SVDMARK_TRT_CACHE``, or None when unset or empty."""
    return os.environ.get(TRT_CACHE_ENV) or None


def pseudonym_key_from_env() -> bytes | None:
    """``$SVDMARK_PSEUDONYM_KEY`` as bytes, or None when unset or blank."""
    text = _env_text(PSEUDONYM_KEY_ENV)
    return text.encode() if text else None


def models_dir_from_env() -> Path | None:
    """``$SVDMARK_MODELS_DIR``, or None when unset or empty."""
    text = os.environ.get(MODELS_DIR_ENV)
    return Path(text) if text else None


def secret_from_env(name: str | None) -> str:
    """The value of a destination's ``password_env`` / ``token_env`` variable, "" when unset or blank."""
    return _env_text(name) if name else ""
# ============================================================================ end of environment
