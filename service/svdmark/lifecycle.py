"""Model lifecycle: install, verify, activate, roll back, shadow and compare model versions.

Where things live:

* packaged models: ``svdmark/data/models/<name>/<version>/`` (package data) (read-only, shipped with svdmark);
* installed models: ``<data-dir>/models/<name>/<version>/`` (``svdmark models install``);
* activation state: ``<data-dir>/models/state.json``, written atomically::

      {"active":  {"<name>": "<version>"},          # overrides ACTIVE files / highest version
       "history": {"<name>": ["<older>", ...]},     # previously active versions, newest last
       "shadow":  {"<name>": "<version>"}}           # candidate run beside the active one

The model registry re-reads ``state.json`` whenever the worker asks for the
active model (once per job, a few hundred bytes), so an activation takes effect
in a running ``svdmark serve`` at its next job; the job in hand finishes with
the model it started with. Shadow results are stored in the journal
(``shadow_results``), never sent. Every change is written to the journal's
audit log with the OS user, the versions and their sha256.
"""
from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from .domain import ModelSpec, Series, Task
from .errors import ModelError
from .journal import Journal
from .logs import event
from .spool import write_durably

log = logging.getLogger("svdmark.lifecycle")

STATE_FILE = "state.json"

SHADOW_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER,
    series_uid TEXT NOT NULL,
    task TEXT NOT NULL,
    active_name TEXT, active_version TEXT, active_sha TEXT, active_summary TEXT,
    shadow_name TEXT NOT NULL, shadow_version TEXT NOT NULL, shadow_sha TEXT, shadow_summary TEXT,
    error TEXT,
    created_at REAL NOT NULL
)
"""


def installed_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models"


def managed(registry, data_dir: Path | None):
    """``registry`` (the packaged models) plus the models installed under ``data_dir`` and their
    activation state; what the service and ``analyze`` hand the pipeline."""
    if data_dir is None or isinstance(registry, ManagedRegistry):
        return registry
    return ManagedRegistry(registry, installed_dir(data_dir))


class ManagedRegistry:
    """A model registry over two roots: packaged ``svdmark/data/models/`` and ``<data-dir>/models/``.

    The active version of a model is the one named in ``<data-dir>/models/state.json`` when
    there is one (re-read on every call: that is how an activation reaches a running service),
    else what the packaged registry says (its ACTIVE file, else the highest version).
    Without installed models or state it behaves exactly like the packaged registry.
    """

    def __init__(self, base, installed: Path):
        from .infer import ModelRegistry

        self.base = base
        self.root = base.root
        self.installed = Path(installed)
        self.local = ModelRegistry(self.installed)

    def __getattr__(self, item):  # anything else the registry offers
        return getattr(self.base, item)

    def _managed(self) -> bool:
        return self.installed.is_dir()

    def names(self) -> list[str]:
        return sorted(set(self.base.names()) | set(self.local.names()))

    def versions(self, name: str) -> list[str]:
        from .infer.registry import version_key

        return sorted(set(self.base.versions(name)) | set(self.local.versions(name)), key=version_key)

    def source(self, name: str, version: str) -> str:
        return "installed" if version in self.local.versions(name) else "packaged"

    def get(self, name: str, version: str) -> ModelSpec:
        reg = self.local if version in self.local.versions(name) else self.base
        return reg.get(name, version)

    def all(self) -> list[ModelSpec]:
        return [self.get(n, v) for n in self.names() for v in self.versions(n)]

    def active_version(self, name: str) -> str:
        versions = self.versions(name)
        if not versions:
            raise ModelError(f"no versions of model {name!r} under {self.root} or {self.installed}")
        wanted = read_state(self.installed)["active"].get(name) if self._managed() else None
        if wanted:
            if wanted not in versions:
                raise ModelError(f"{self.installed / STATE_FILE} names {name} {wanted!r}, which is not installed"
                                 f" (have: {', '.join(versions)})")
            return wanted
        if self.base.versions(name):
            return self.base.active_version(name)
        return versions[-1]

    def active(self, task: Task) -> ModelSpec:
        if not self._managed():
            return self.base.active(task)
        task = Task(task)
        candidates = []
        for name in self.names():
            versions = self.versions(name)
            if versions and self.manifest(name, versions[-1]).get("task") == task.value:
                candidates.append(name)
        if not candidates:
            raise ModelError(f"no model for task {task.value!r} under {self.root} or {self.installed}")
        if len(candidates) > 1:
            raise ModelError(f"several models for task {task.value!r}: {', '.join(candidates)}; remove all but one")
        return self.get(candidates[0], self.active_version(candidates[0]))

    def manifest(self, name: str, version: str) -> dict:
        root = self.installed if self.source(name, version) == "installed" else self.root
        f = root / name / version / "manifest.json"
        try:
            return json.loads(f.read_text())
        except FileNotFoundError:
            raise ModelError(f"no manifest at {f}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"cannot read manifest {f}: {exc}") from None


def actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers): fall back to the uid
        return f"uid:{os.getuid()}"


# --------------------------------------------------------------------------- state file
def read_state(models_dir: Path) -> dict:
    try:
        data = json.loads((Path(models_dir) / STATE_FILE).read_text())
    except FileNotFoundError:
        data = {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model state file {Path(models_dir) / STATE_FILE} is unreadable: {exc}") from None
    return {"active": dict(data.get("active", {})), "history": {k: list(v) for k, v in data.get("history", {}).items()},
            "shadow": dict(data.get("shadow", {}))}


def write_state(models_dir: Path, state: dict) -> None:
    state = dict(state, updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_durably(Path(models_dir) / STATE_FILE, json.dumps(state, indent=2, sort_keys=True).encode())


@contextlib.contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write of the state between concurrent `svdmark models` commands."""
    import fcntl

    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(models_dir) / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- the manager
class Lifecycle:
    def __init__(self, config, runtime=None):
        from .infer import ModelRegistry

        self.config = config
        self.dir = installed_dir(config.data_dir)
        self.registry = ManagedRegistry(ModelRegistry(config.models_dir), self.dir)
        self._runtime = runtime
        self._journal: Journal | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = Journal(self.config.journal_path)
            ensure_shadow_table(self._journal)
        return self._journal

    @property
    def runtime(self):
        if self._runtime is None:
            from .infer import Runtime

            self._runtime = Runtime()
        return self._runtime

    def versions(self, name: str) -> list[tuple[str, str]]:
        """(version, source) pairs, source 'packaged' or 'installed', in version order."""
        return [(v, self.registry.source(name, v)) for v in self.registry.versions(name)]

    def names(self) -> list[str]:
        return self.registry.names()

    def spec(self, name: str, version: str) -> ModelSpec:
        """The model, its manifest checked and its sha256 verified (raises ModelError)."""
        versions = self.registry.versions(name)
        if version not in versions:
            raise ModelError(f"model {name} has no version {version!r} (installed: {', '.join(versions) or 'none'})")
        return self.registry.get(name, version)

    def active_version(self, name: str) -> str | None:
        if not self.registry.versions(name):
            return None
        return self.registry.active_version(name)

    def task_of(self, name: str) -> str | None:
        for version in reversed(self.registry.versions(name)):
            try:
                return str(self._manifest(name, version).get("task"))
            except ModelError:
                continue
        return None

    def _manifest(self, name: str, version: str) -> dict:
        return self.registry.manifest(name, version)

    def audit(self, action: str, detail: dict) -> None:
        self.journal.audit(actor(), action, detail)
        event(log, action, user=actor(), model=str(detail.get("name", "")), version=str(detail.get("version", "")),
              sha256=str(detail.get("sha256", "") or ""))

    # ------------------------------------------------------------------ read-only
    def list(self) -> list[dict]:
        state = read_state(self.dir)
        rows = []
        for name in self.names():
            active = self.active_version(name)
            for version, source in self.versions(name):
                try:
                    m = self._manifest(name, version)
                except ModelError as exc:
                    m = {"error": str(exc)}
                rows.append({"name": name, "version": version, "task": m.get("task"), "source": source,
                             "sha256": m.get("sha256"), "active": version == active,
                             "shadow": state["shadow"].get(name) == version,
                             "path": str((self.registry.root if source == "packaged" else self.dir) / name / version)})
        return rows

    def show(self, name: str, version: str | None = None) -> dict:
        if not self.versions(name):
            raise ModelError(f"no model named {name!r} (have: {', '.join(self.names()) or 'none'})")
        version = version or self.active_version(name)
        state = read_state(self.dir)
        manifest = self._manifest(name, version)
        audit = [dict(r) for r in self.journal.query(
            "SELECT at, actor, action, detail FROM audit WHERE action LIKE 'model.%' ORDER BY id DESC LIMIT 200")]
        audit = [a for a in audit if json.loads(a["detail"]).get("name") == name][:20]
        return {"name": name, "version": version, "source": dict(self.versions(name))[version],
                "active_version": self.active_version(name), "shadow_version": state["shadow"].get(name),
                "history": state["history"].get(name, []), "versions": [v for v, _ in self.versions(name)],
                "manifest": manifest, "recent_changes": audit}

    # ------------------------------------------------------------------ checks
    def check(self, spec: ModelSpec) -> dict:
        """Self-test on the built-in phantom against the manifest's bounds; raises ModelError on failure."""
        from .infer import self_test

        try:
            result = self_test(spec, self.runtime)
        except ModelError:
            raise
        except Exception as exc:  # a model that crashes on the phantom fails its self-test
            raise ModelError(f"{spec.label}: self-test crashed: {type(exc).__name__}: {exc}") from None
        info = {"passed": result.passed, "measured": result.measured, "expected": list(result.expected),
                "quantity": result.quantity, "provider": result.provider, "text": result.describe()}
        if not result.passed:
            raise ModelError(result.describe())
        return info

    def verify(self, name: str | None = None, version: str | None = None) -> list[dict]:
        targets = [(n, v) for n in ([name] if name else self.names())
                   for v in ([version] if version else [v for v, _ in self.versions(n)])]
        if name and not self.versions(name):
            raise ModelError(f"no model named {name!r} (have: {', '.join(self.names()) or 'none'})")
        out = []
        for n, v in targets:
            row = {"name": n, "version": v, "ok": False}
            try:
                spec = self.spec(n, v)
                row["sha256"] = spec.sha256
                row["checksum"] = "ok"
                row["self_test"] = self.check(spec)
                row["ok"] = True
            except ModelError as exc:
                row["error"] = str(exc)
            out.append(row)
        self.audit("model.verify", {"results": [{k: r.get(k) for k in ("name", "version", "ok", "sha256", "error")}
                                                for r in out]})
        return out

    # ------------------------------------------------------------------ changes
    def install(self, path: Path, activate: bool = False) -> dict:
        from .infer import ModelRegistry

        src = Path(path)
        if src.is_file() and src.name == "manifest.json":
            src = src.parent
        if not (src / "manifest.json").is_file():
            raise ModelError(f"{path}: no manifest.json there; give the folder holding manifest.json and the model")
        try:
            manifest = json.loads((src / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{src / 'manifest.json'}: cannot read: {exc}") from None
        name, version = str(manifest.get("name", "")), str(manifest.get("version", ""))
        if not name or not version or "/" in name + version or name.startswith(".") or version.startswith("."):
            raise ModelError(f"{src / 'manifest.json'}: needs a plain 'name' and 'version' (got {name!r} {version!r})")
        existing = dict(self.versions(name))
        if version in existing:
            spec = self.spec(name, version)
            if spec.sha256 == manifest.get("sha256"):
                return {"name": name, "version": version, "sha256": spec.sha256, "installed": False,
                        "detail": f"{name} {version} is already installed ({existing[version]}, same sha256)"}
            raise ModelError(f"{name} {version} is already installed with a different sha256"
                             f" ({spec.sha256[:12]}…); give the new model a new version")
        task = manifest.get("task")
        for other in self.names():
            if other != name and self.task_of(other) == task:
                raise ModelError(f"model {other} already serves task {task!r}; svdmark runs one model name per task,"
                                 f" so install {name} as a new version of {other} or remove {other} first")
        with _locked(self.dir):
            staging_root = self.dir / f".staging-{uuid.uuid4().hex[:8]}"
            staged = staging_root / name / version
            try:
                shutil.copytree(src, staged)
                spec = ModelRegistry(staging_root).get(name, version)  # manifest + sha256 of the copy
                test = self.check(spec)
                state = read_state(self.dir)
                current = self.active_version(name)
                if name not in state["active"] and current is not None:
                    state["active"][name] = current  # installing must not change what runs
                final = self.dir / name / version
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
                if current is None:
                    state["active"][name] = version  # the first version of a new model
                write_state(self.dir, state)
            finally:
                shutil.rmtree(staging_root, ignore_errors=True)
        detail = {"name": name, "version": version, "sha256": spec.sha256, "task": task, "source": str(src.resolve()),
                  "self_test": test["text"], "active_version": self.active_version(name)}
        self.audit("model.install", detail)
        out = dict(detail, installed=True)
        if activate:
            out["activation"] = self.activate(name, version, tested=True)
        return out

    def activate(self, name: str, version: str, tested: bool = False, require_validation: bool = False) -> dict:
        spec = self.spec(name, version)
        if require_validation:
            self.require_validation(spec)
        test = None if tested else self.check(spec)
        with _locked(self.dir):
            state = read_state(self.dir)
            previous = self.active_version(name)
            if previous == version:
                return {"name": name, "version": version, "changed": False, "detail": f"{name} {version} is already active"}
            if previous is not None:
                state["history"].setdefault(name, []).append(previous)
            state["active"][name] = version
            if state["shadow"].get(name) == version:
                state["shadow"].pop(name)
            write_state(self.dir, state)
        prev_sha = self._sha_or_none(name, previous)
        detail = {"name": name, "version": version, "sha256": spec.sha256, "previous_version": previous,
                  "previous_sha256": prev_sha, "self_test": test["text"] if test else "passed at install"}
        self.audit("model.activate", detail)
        return dict(detail, changed=True)

    def rollback(self, name: str) -> dict:
        with _locked(self.dir):
            state = read_state(self.dir)
            history = state["history"].get(name, [])
            current = self.active_version(name)
            installed = dict(self.versions(name))
            skipped = []
            while history:
                candidate = history.pop()
                if candidate in installed and candidate != current:
                    break
                skipped.append(candidate)
            else:
                raise ModelError(f"nothing to roll back to for {name}: no earlier active version is recorded"
                                 + (f" (gone: {', '.join(skipped)})" if skipped else ""))
            spec = self.spec(name, candidate)  # checksum still right?
            state["active"][name] = candidate
            state["history"][name] = history
            write_state(self.dir, state)
        detail = {"name": name, "version": candidate, "sha256": spec.sha256, "previous_version": current,
                  "previous_sha256": self._sha_or_none(name, current)}
        self.audit("model.rollback", detail)
        return detail

    def set_shadow(self, name: str, version: str | None) -> dict:
        spec = test = None
        if version is not None:
            spec = self.spec(name, version)
            if version == self.active_version(name):
                raise ModelError(f"{name} {version} is the active version; a shadow must be a different version")
            test = self.check(spec)
        with _locked(self.dir):
            state = read_state(self.dir)
            previous = state["shadow"].get(name)
            if version is None:
                state["shadow"].pop(name, None)
            else:
                state["shadow"][name] = version
            write_state(self.dir, state)
        detail = {"name": name, "version": version, "sha256": spec.sha256 if spec else None,
                  "previous_shadow": previous, "self_test": test["text"] if test else None}
        self.audit("model.shadow" if version else "model.shadow_off", detail)
        return detail

    # ------------------------------------------------------------------ site validation
    def record_validation(self, detail: dict) -> None:
        """Audit one ``svdmark models validate`` run (``svdmark.validation``): model, version, sha256,
        reference folder, case counts, verdict, report path."""
        self.audit("model.validate", detail)

    def validations(self, name: str, version: str | None = None) -> list[dict]:
        """Validations recorded in this journal for ``name`` (and ``version``), newest first."""
        rows = self.journal.query("SELECT at, actor, detail FROM audit WHERE action = 'model.validate' ORDER BY id DESC")
        out = []
        for r in rows:
            d = json.loads(r["detail"])
            if d.get("name") == name and (version is None or d.get("version") == version):
                out.append(dict(d, at=r["at"], actor=r["actor"]))
        return out

    def require_validation(self, spec: ModelSpec) -> dict:
        """The latest validation of exactly this model file on this site, if it passed; else ModelError.

        The *latest* one counts: a version that passed once and failed a later validation is refused.
        """
        found = self.validations(spec.name, spec.version)
        hint = (f"run `svdmark models validate {spec.name} {spec.version} --reference DIR` on this site's"
                " labelled cases first, or activate without --require-validation")
        why = None
        if not found:
            why = f"{spec.label} has no validation recorded on this site ({self.config.journal_path}); {hint}"
        else:
            last = found[0]
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"]))
            if last.get("sha256") != spec.sha256:
                why = (f"{spec.label}: the latest validation ({when}) was of a different model file (sha256"
                       f" {str(last.get('sha256'))[:12]}…, now {spec.sha256[:12]}…); {hint}")
            elif not last.get("passed"):
                why = (f"{spec.label}: the latest validation on this site ({when}, {last.get('n_included')} cases,"
                       f" report {last.get('report')}) FAILED its acceptance criteria; {hint}")
        if why:
            self.audit("model.activate_refused", {"name": spec.name, "version": spec.version,
                                                  "sha256": spec.sha256, "reason": why})
            raise ModelError(why)
        return found[0]

    def _sha_or_none(self, name: str, version: str | None) -> str | None:
        if version is None:
            return None
        try:
            return self._manifest(name, version).get("sha256")
        except ModelError:
            return None

    # ------------------------------------------------------------------ compare
    def compare(self, name: str | None = None, version: str | None = None) -> list[dict]:
        state = read_state(self.dir)
        rows = [dict(r) for r in self.journal.query("SELECT * FROM shadow_results ORDER BY id")]
        if name:
            rows = [r for r in rows if r["shadow_name"] == name]
        if version:
            rows = [r for r in rows if r["shadow_version"] == version]
        elif name and state["shadow"].get(name):
            rows = [r for r in rows if r["shadow_version"] == state["shadow"][name]]
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault((r["shadow_name"], r["active_version"], r["shadow_version"], r["task"]), []).append(r)
        return [agreement(k[0], k[1], k[2], k[3], g) for k, g in sorted(groups.items())]


def _withheld(summary: dict, key: str) -> bool:
    """A result the quality gate withheld (no number to compare); also a summary without the number."""
    return summary.get("measurable") is False or summary.get(key) is None


def agreement(name: str, active_version: str, shadow_version: str, task: str, rows: list[dict]) -> dict:
    """Paired agreement of shadow vs active on the same series (shadow minus active).

    Withheld results (the quality gate's ``measurable`` False: no number) are counted, not compared:
    ``withheld`` gives how many series the active version withheld, the shadow withheld, and both
    (``active_only`` / ``shadow_only``: one version measured what the other withheld). Every
    agreement figure (differences, exact count, grade and flag agreement) is over the
    ``measurable_pairs`` series that both versions measured.
    """
    import numpy as np

    ok = [r for r in rows if not r["error"] and r["shadow_summary"] and r["active_summary"]]
    paired = [(json.loads(r["active_summary"]), json.loads(r["shadow_summary"])) for r in ok]
    key = "wml_ml" if task == Task.WML.value else "cmb_count"
    wa = [_withheld(p[0], key) for p in paired]
    ws = [_withheld(p[1], key) for p in paired]
    pairs = [p for p, a, s in zip(paired, wa, ws) if not a and not s]
    withheld = {"active": sum(wa), "shadow": sum(ws), "both": sum(a and s for a, s in zip(wa, ws)),
                "active_only": sum(a and not s for a, s in zip(wa, ws)),
                "shadow_only": sum(s and not a for a, s in zip(wa, ws))}
    out: dict[str, Any] = {"name": name, "task": task, "active_version": active_version,
                           "shadow_version": shadow_version, "series": len(ok), "errors": len(rows) - len(ok),
                           "series_uids": sorted({r["series_uid"] for r in ok}),
                           "withheld": withheld, "measurable_pairs": len(pairs),
                           "agreement_over": "series measurable by both versions (withheld results excluded)"}
    a = np.array([p[0][key] for p in pairs], float)
    s = np.array([p[1][key] for p in pairs], float)
    d = s - a
    out[key] = _diff_stats(d, a, s)
    if task != Task.WML.value:
        out["cmb_count"]["exact_agreement_percent"] = round(100.0 * float(np.mean(d == 0)), 1) if len(d) else None
        ga = [p[0]["cmb_grade"] for p in pairs]
        gs = [p[1]["cmb_grade"] for p in pairs]
        out["grade_agreement_percent"] = round(100.0 * sum(x == y for x, y in zip(ga, gs)) / len(ga), 1) if ga else None
    fa = [{f["rule_id"]: f.get("category") for f in p[0].get("flags", [])} for p in pairs]
    fs = [{f["rule_id"]: f.get("category") for f in p[1].get("flags", [])} for p in pairs]
    out["flag_agreement_percent"] = (round(100.0 * sum(x == y for x, y in zip(fa, fs)) / len(fa), 1) if fa else None)
    return out


def _diff_stats(d, a, s) -> dict:
    import numpy as np

    if len(d) == 0:
        return {"n": 0}
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    mean = float(np.mean(d))
    return {"n": int(len(d)), "mean_active": float(np.mean(a)), "mean_shadow": float(np.mean(s)),
            "mean_difference": mean, "sd_difference": sd, "mean_abs_difference": float(np.mean(np.abs(d))),
            "max_abs_difference": float(np.max(np.abs(d))),
            "limits_of_agreement": [mean - 1.96 * sd, mean + 1.96 * sd]}


def format_comparison(c: dict) -> str:
    lines = [f"{c['name']}: shadow {c['shadow_version']} vs active {c['active_version']} ({c['task']}),"
             f" {c['series']} paired series" + (f", {c['errors']} shadow error(s)" if c["errors"] else "")]
    key = "wml_ml" if "wml_ml" in c else "cmb_count"
    st = c[key]
    unit = " mL" if key == "wml_ml" else ""
    w = c.get("withheld") or {}
    if w:
        lines.append(f"  withheld (not reliably measurable): active {w['active']}, shadow {w['shadow']},"
                     f" both {w['both']} (active only {w['active_only']}, shadow only {w['shadow_only']});"
                     f" agreement over the {c['measurable_pairs']} series measurable by both")
    if st.get("n"):
        lines.append(f"  {'volume' if key == 'wml_ml' else 'count'} difference (shadow - active): mean"
                     f" {st['mean_difference']:+.3f}{unit} (SD {st['sd_difference']:.3f}), mean abs"
                     f" {st['mean_abs_difference']:.3f}{unit}, max abs {st['max_abs_difference']:.3f}{unit};"
                     f" 95% limits of agreement {st['limits_of_agreement'][0]:+.3f} to {st['limits_of_agreement'][1]:+.3f}")
        if key == "cmb_count":
            lines.append(f"  exact count agreement {st['exact_agreement_percent']:.1f}%,"
                         f" burden grade agreement {c['grade_agreement_percent']:.1f}%")
        if c.get("flag_agreement_percent") is not None:
            lines.append(f"  flag agreement {c['flag_agreement_percent']:.1f}%")
    elif c["series"]:
        lines.append("  no series measurable by both versions yet")
    else:
        lines.append("  no paired results yet")
    return "\n".join(lines)


# --------------------------------------------------------------------------- shadow runs (in the worker)
def ensure_shadow_table(journal: Journal) -> None:
    journal.query(SHADOW_SCHEMA)


class _Pinned:
    """A registry stand-in that hands out one fixed model (the shadow version)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def active(self, task) -> ModelSpec:
        if Task(task) is not self.spec.task:
            raise ModelError(f"shadow model {self.spec.label} is for {self.spec.task.value}, not {Task(task).value}")
        return self.spec


def shadow_version(data_dir: Path, model_name: str) -> str | None:
    try:
        return read_state(installed_dir(data_dir))["shadow"].get(model_name)
    except ModelError:
        return None


def _find_spec(registry, data_dir: Path, name: str, version: str) -> ModelSpec:
    from .infer import ModelRegistry

    for reg in (ModelRegistry(installed_dir(data_dir)), registry):
        if version in reg.versions(name):
            return reg.get(name, version)
    raise ModelError(f"shadow version {name} {version} is not installed")


def run_shadow(context, journal: Journal, data_dir: Path, job_id: int | None, series: Series, result) -> dict | None:
    """Run the shadow version of ``result.model`` (if one is set) on ``series``; store both summaries.

    Called by the worker after the active model's results are journalled; it sends nothing.
    """
    from .pipeline import analyse
    from .summary import summarise

    version = shadow_version(data_dir, result.model.name)
    if not version or version == result.model.version:
        return None
    ensure_shadow_table(journal)
    active_summary = summarise(result)
    row = {"job_id": job_id, "series_uid": series.series_uid, "task": result.model.task.value,
           "active_name": result.model.name, "active_version": result.model.version,
           "active_sha": result.model.sha256, "active_summary": json.dumps(active_summary),
           "shadow_name": result.model.name, "shadow_version": version, "shadow_sha": None,
           "shadow_summary": None, "error": None, "created_at": time.time()}
    try:
        spec = _find_spec(context.models, data_dir, result.model.name, version)
        row["shadow_sha"] = spec.sha256
        shadow = analyse(series, dataclasses.replace(context, models=_Pinned(spec)))
        row["shadow_summary"] = json.dumps(summarise(shadow))
    except Exception as exc:  # a broken candidate must never disturb the live service
        row["error"] = f"{type(exc).__name__}: {exc}"
    cols = ", ".join(row)
    journal.query(f"INSERT INTO shadow_results ({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    event(log, "shadow_done", series_uid=series.series_uid, model=result.model.name, active=result.model.version,
          shadow=version, error=row["error"] or "")
    return row
