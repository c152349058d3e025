"""An active model whose file was altered after activation turns /healthz unhealthy with the model named, and
healthy again once the file is right, without a job having to fail first (the service's models loop)."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from svdmark import health
from svdmark.config import Config
from svdmark.export import FolderExporter
from svdmark.service import Service

from tests.cli import fakemodels
from tests.peers import free_port, healthz, wait_until


def test_an_altered_model_file_turns_healthz_unhealthy_until_it_is_right_again(tmp_path):
    models = tmp_path / "models"
    fakemodels.make_wml(models, "1.0.0")
    fakemodels.make_cmb(models, "1.0.0")
    onnx = models / "wml-ncct" / "1.0.0" / "model.onnx"
    shutil.copy(onnx, tmp_path / "good.onnx")
    onnx.write_bytes(onnx.read_bytes() + b"\0")  # altered after its manifest's sha256 was taken
    cfg = Config(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data", models_dir=models, metrics_port=0)
    svc = Service(cfg, exporter=FolderExporter(tmp_path / "out"), context=SimpleNamespace())
    svc.start()
    try:
        port = svc._health.address[1]
        code, report = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(healthz(port)), 30, "/healthz 503")
        assert "model wml-ncct 1.0.0" in report["problems"]["models"] and "checksum mismatch" in report["problems"]["models"]
        assert "cmb-swi" not in report["problems"]["models"]  # the sound model is not named
        shutil.copy(tmp_path / "good.onnx", onnx)
        wait_until(lambda: healthz(port)[0] == 200 or None, 60, "/healthz 200 once the file is right")
    finally:
        svc.stop()
        for name in health.problems():
            health.clear_problem(name)


def test_a_broken_shadow_candidate_is_logged_not_a_health_problem(tmp_path, caplog):
    """A shadow candidate must never disturb the live service: its altered file is logged, /healthz stays healthy
    (a probe would restart the pod), while the active model's problem would turn it unhealthy."""
    from svdmark.errors import ModelError
    from svdmark.lifecycle import Lifecycle

    models = tmp_path / "models"
    fakemodels.make_wml(models, "1.0.0")
    cfg = Config(host="127.0.0.1", port=free_port(), data_dir=tmp_path / "data", models_dir=models, metrics_port=0)
    lifecycle = Lifecycle(cfg)
    lifecycle.install(fakemodels.make_wml(tmp_path / "cand", "1.1.0"))
    lifecycle.set_shadow("wml-ncct", "1.1.0")
    shadow = cfg.data_dir / "models" / "wml-ncct" / "1.1.0" / "model.onnx"
    shadow.write_bytes(shadow.read_bytes() + b"\0")
    svc = Service(cfg, exporter=FolderExporter(tmp_path / "out"), context=SimpleNamespace())
    with caplog.at_level("WARNING", logger="svdmark.service"):
        assert svc._models_step() is False
    assert [r.fields["model"] for r in caplog.records if r.getMessage() == "shadow_model_unusable"] == \
        ["model wml-ncct 1.1.0"]
    active = models / "wml-ncct" / "1.0.0" / "model.onnx"
    active.write_bytes(active.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="model wml-ncct 1.0.0"):
        svc._models_step()
