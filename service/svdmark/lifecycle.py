"""Model lifecycle commands (``svdmark models``): install, verify, activate, roll back, set the shadow
version, record site validations. Every change is written to the journal's audit log with the OS user,
the versions and their sha256.

Which version runs is the registry's answer (:class:`svdmark.infer.registry.ModelRegistry` over the
packaged and the installed models); the activation state it reads is :mod:`svdmark.infer.activation`,
which these commands change. Shadow runs are :mod:`svdmark.shadow`; their agreement statistics and text
are :mod:`svdmark.cli.agreement`.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

from .domain import ModelSpec, iso_utc
from .errors import ModelError
from .infer import reference
from .infer.activation import installed_dir, locked, read_state, write_state
from .infer.registry import ModelRegistry, manifest_digest
from .journal import Journal, ShadowResult
from .logs import event

log = logging.getLogger("svdmark.lifecycle")


def actor() -> str:
    """Who does it, for the audit trail: the account the command runs as, from its effective uid's passwd entry, not
    from the environment (LOGNAME, USER and SUDO_USER are whatever the caller set; sudo's own log says who ran
    ``sudo -u``)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (containers): the uid
        return f"uid:{uid}"


def problem_key(name: str, version: str) -> str:
    """How :meth:`Lifecycle.in_use` names a version that would not load among its problems."""
    return f"model {name} {version}"


# --------------------------------------------------------------------------- the manager
class Lifecycle:
    def __init__(self, config, runtime=None):
        self.config = config
        self.dir = installed_dir(config.data_dir)
        self.registry = ModelRegistry(config.models_dir, self.dir)
        self._runtime = runtime
        self._journal: Journal | None = None

    # ------------------------------------------------------------------ plumbing
    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = Journal(self.config.journal_url)
        return self._journal

    def _journal_name(self) -> str:
        return self.journal.describe()

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
                return str(self.registry.manifest(name, version).get("task"))
            except ModelError:
                continue
        return None

    def audit(self, action: str, detail: dict) -> None:
        self.journal.audit(actor(), action, detail)
        event(log, action, user=actor(), model=str(detail.get("name", "")), version=str(detail.get("version", "")),
              sha256=str(detail.get("sha256", "") or ""))

    def audit_refusal(self, action: str, spec: ModelSpec, reason: str, **detail) -> None:
        """Audit a change to ``spec`` that was refused (or ended without a result), with why."""
        self.audit(action, {"name": spec.name, "version": spec.version, "sha256": spec.sha256, **detail,
                            "reason": reason})

    # ------------------------------------------------------------------ read-only
    def list(self) -> list[dict]:
        state = read_state(self.dir)
        rows = []
        for name in self.names():
            active = self.active_version(name)
            for version, source in self.versions(name):
                try:
                    m = self.registry.manifest(name, version)
                except ModelError as exc:
                    m = {"error": str(exc)}
                rows.append({"name": name, "version": version, "task": m.get("task"), "source": source,
                             "sha256": m.get("sha256"), "error": m.get("error"), "active": version == active,
                             "shadow": state["shadow"].get(name) == version,
                             "path": str((self.registry.root if source == "packaged" else self.dir) / name / version)})
        return rows

    def in_use(self) -> tuple[list[dict], dict[str, str]]:
        """The active and shadow versions, each checked as a job would load it (manifest and sha256), and the
        problems: one per version that would not load, or ``models`` when the activation state is unreadable."""
        out: list[dict] = []
        try:
            listed = self.list()
        except ModelError as exc:  # the activation state itself unreadable: every job would fail
            return out, {"models": str(exc)}
        problems = {}
        for m in listed:
            if not (m["active"] or m["shadow"]):
                continue
            row = {k: m[k] for k in ("name", "version", "task", "sha256", "active", "shadow")}
            try:
                self.spec(m["name"], m["version"])
                row["verified"] = True
            except ModelError as exc:
                row["verified"] = False
                problems[problem_key(m["name"], m["version"])] = str(exc)
            out.append(row)
        return out, problems

    def show(self, name: str, version: str | None = None) -> dict:
        if not self.versions(name):
            raise ModelError(f"no model named {name!r} (have: {', '.join(self.names()) or 'none'})")
        version = version or self.active_version(name)
        if version not in dict(self.versions(name)):
            have = ", ".join(v for v, _ in self.versions(name))
            raise ModelError(f"{name} has no version {version!r} (have: {have})")
        state = read_state(self.dir)
        manifest = self.registry.manifest(name, version)
        audit = [{"at": iso_utc(a.at), "actor": a.actor, "action": a.action,
                  "detail": json.dumps(a.detail, sort_keys=True)}
                 for a in self.journal.audit_entries(action_prefix="model.", limit=200)
                 if a.detail.get("name") == name][:20]
        return {"name": name, "version": version, "source": dict(self.versions(name))[version],
                "active_version": self.active_version(name), "shadow_version": state["shadow"].get(name),
                "history": state["history"].get(name, []), "versions": [v for v, _ in self.versions(name)],
                "manifest": manifest, "recent_changes": audit}

    # ------------------------------------------------------------------ checks
    def check(self, spec: ModelSpec) -> dict:
        """Self-test on the model's reference volumes (``infer.reference``) against the manifest's bounds; raises
        ModelError on failure."""
        from .infer import self_test

        try:
            result = self_test(spec, self.runtime)
        except ModelError:
            raise
        except Exception as exc:  # a model that crashes on its reference volumes fails its self-test
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
        src = Path(path)
        if src.is_file() and src.name == "manifest.json":
            src = src.parent
        if not (src / "manifest.json").is_file():
            raise ModelError(f"{path}: no manifest.json there; give the folder holding manifest.json and the model")
        try:
            manifest = json.loads((src / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{src / 'manifest.json'}: cannot read: {exc}") from None
        if not isinstance(manifest, dict):
            raise ModelError(f"{src / 'manifest.json'}: must hold a JSON object, not a {type(manifest).__name__}")
        name, version = str(manifest.get("name", "")), str(manifest.get("version", ""))
        if not name or not version or "/" in name + version or name.startswith(".") or version.startswith("."):
            raise ModelError(f"{src / 'manifest.json'}: needs a plain 'name' and 'version' (got {name!r} {version!r})")
        if version == reference.STORE:
            raise ModelError(f"{src / 'manifest.json'}: version {version!r} is the name of the shared reference folder")
        with locked(self.dir):  # the checks and the change in one lock: two admins installing at once
            existing = dict(self.versions(name))
            if version in existing:
                spec = self.spec(name, version)
                if spec.sha256 != manifest.get("sha256"):
                    raise ModelError(f"{name} {version} is already installed with a different sha256"
                                     f" ({spec.sha256[:12]}…); give the new model a new version")
                if manifest_digest(spec) != manifest_digest(replace(spec, manifest=manifest)):
                    raise ModelError(f"{name} {version} is already installed with the same model but another "
                                     "manifest (thresholds, post-processing or limits); give it a new version")
                out = {"name": name, "version": version, "sha256": spec.sha256, "installed": False,
                       "detail": f"{name} {version} is already installed ({existing[version]}, same sha256)"}
            else:
                out = self._install_new(src, manifest, name, version)
        if activate:  # what was asked for still happens (with its self-test, unless install just ran it)
            out["activation"] = self.activate(name, version, tested=out["installed"])
        return out

    def _install_new(self, src: Path, manifest: dict, name: str, version: str) -> dict:
        """Copy, check and self-test a new version, make it the active one if it is its model's first, and audit
        it; under :func:`locked`."""
        task = manifest.get("task")
        own = self.task_of(name)
        if own is not None and own != task:  # the registry takes a name's task from its newest version
            raise ModelError(f"{name} serves task {own!r}; version {version} says task {task!r}: a model name keeps "
                             "its task, so give the new model its own name")
        for other in self.names():
            if other != name and self.task_of(other) == task:
                raise ModelError(f"model {other} already serves task {task!r}; svdmark runs one model name per task,"
                                 f" so install {name} as a new version of {other} or remove {other} first")
        staging_root = self.dir / f".staging-{uuid.uuid4().hex[:8]}"
        staged = staging_root / name / version
        try:
            shutil.copytree(src, staged)
            try:
                spec = ModelRegistry(staging_root).get(name, version)  # manifest + sha256 of the copy
                reference.copy_into(src, staged, manifest.get("self_test"))  # a shared reference comes along
                test = self.check(spec)
            except ModelError as exc:  # name the folder the admin gave, not the staging copy (gone by now)
                raise ModelError(str(exc).replace(str(staged), str(src))) from None
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
        return dict(detail, installed=True)

    def _spec_or_refuse(self, action: str, name: str, version: str) -> ModelSpec:
        """:meth:`spec`, auditing ``action`` with the reason when its manifest or checksum is wrong."""
        try:
            return self.spec(name, version)
        except ModelError as exc:
            if version in dict(self.versions(name)):  # an installed version that does not check out
                self.audit(action, {"name": name, "version": version, "sha256": None, "reason": str(exc)})
            raise

    def activate(self, name: str, version: str, tested: bool = False, require_validation: bool = False) -> dict:
        spec = self._spec_or_refuse("model.activate_refused", name, version)
        validation = self.require_validation(spec) if require_validation else None
        try:
            test = None if tested else self.check(spec)
        except ModelError as exc:
            self.audit_refusal("model.activate_refused", spec, str(exc))
            raise
        with locked(self.dir):
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
            detail = {"name": name, "version": version, "sha256": spec.sha256, "previous_version": previous,
                      "previous_sha256": self._sha_or_none(name, previous),
                      "self_test": test["text"] if test else "passed at install",
                      "validation_required": require_validation,
                      "validation": None if validation is None else {k: validation.get(k) for k in
                                                                     ("finished_at", "report", "n_included")}}
            self.audit("model.activate", detail)  # under the lock: the audit's order is the changes' order
        return dict(detail, changed=True)

    def rollback(self, name: str) -> dict:
        with locked(self.dir):
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
            spec = self._spec_or_refuse("model.rollback_refused", name, candidate)  # checksum still right?
            try:
                test = self.check(spec)  # and its self-test, as activation runs it
            except ModelError as exc:
                self.audit_refusal("model.rollback_refused", spec, str(exc))
                raise ModelError(f"not rolled back to {spec.label}: {exc}; activate another installed version with "
                                 f"`svdmark models activate {name} VERSION`") from None
            state["active"][name] = candidate
            state["history"][name] = history
            if state["shadow"].get(name) == candidate:  # no version shadows itself
                state["shadow"].pop(name)
            write_state(self.dir, state)
            detail = {"name": name, "version": candidate, "sha256": spec.sha256, "previous_version": current,
                      "previous_sha256": self._sha_or_none(name, current), "self_test": test["text"]}
            self.audit("model.rollback", detail)  # under the lock, as activate
        return detail

    def set_shadow(self, name: str, version: str | None) -> dict:
        spec = test = None
        if version is not None:
            spec = self.spec(name, version)
            if version == self.active_version(name):
                raise ModelError(f"{name} {version} is the active version; a shadow must be a different version")
            test = self.check(spec)
        with locked(self.dir):
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
        return [dict(a.detail, at=a.at, actor=a.actor) for a in self.journal.audit_entries(action="model.validate")
                if a.detail.get("name") == name and (version is None or a.detail.get("version") == version)]

    def require_validation(self, spec: ModelSpec) -> dict:
        """The latest validation of exactly this model file and manifest on this site, if it passed; else
        ModelError.

        The *latest* one counts: a version that passed once and failed a later validation is refused.
        """
        found = self.validations(spec.name, spec.version)
        hint = (f"run `svdmark models validate {spec.name} {spec.version} --reference DIR` on this site's"
                " labelled cases first, or activate without --require-validation")
        why = None
        if not found:
            why = f"{spec.label} has no validation recorded on this site ({self._journal_name()}); {hint}"
        else:
            last = found[0]
            when = iso_utc(last["at"])
            if last.get("sha256") != spec.sha256:
                why = (f"{spec.label}: the latest validation ({when}) was of a different model file (sha256"
                       f" {str(last.get('sha256'))[:12]}…, now {spec.sha256[:12]}…); {hint}")
            elif last.get("manifest_sha256") != manifest_digest(spec):
                why = (f"{spec.label}: its manifest (thresholds, post-processing, quality limits) is not the one"
                       f" validated on {when}" + ("" if last.get("manifest_sha256") else
                                                   " (that validation did not record its manifest)") + f"; {hint}")
            elif not last.get("passed"):
                why = (f"{spec.label}: the latest validation on this site ({when}, {last.get('n_included')} cases,"
                       f" report {last.get('report')}) FAILED its acceptance criteria; {hint}")
        if why:
            self.audit_refusal("model.activate_refused", spec, why)
            raise ModelError(why)
        return found[0]

    def _sha_or_none(self, name: str, version: str | None) -> str | None:
        if version is None:
            return None
        try:
            return self.registry.manifest(name, version).get("sha256")
        except ModelError:
            return None

    # ------------------------------------------------------------------ shadow results
    def shadow_runs(self, name: str | None = None, version: str | None = None) -> list[ShadowResult]:
        """Journalled shadow runs of ``name`` (all models if None) and shadow ``version`` (default: the
        version now in shadow of ``name``, else every version)."""
        rows = self.journal.shadow_results()
        if name:
            rows = [r for r in rows if r.shadow_name == name]
            if not rows and not self.versions(name):  # a typo, not a model without shadow results yet
                raise ModelError(f"no model named {name!r} (have: {', '.join(self.names()) or 'none'})")
        version = version or (read_state(self.dir)["shadow"].get(name) if name else None)
        if version:
            rows = [r for r in rows if r.shadow_version == version]
        return rows
