"""Every environment variable svdmark reads is read in ``config.py``, by ``load`` or one small named function."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import svdmark
from svdmark import config

PACKAGE = Path(svdmark.__file__).parent
READ = re.compile(r"os\.environ(?!\.setdefault)|getenv")


def test_only_config_reads_the_environment():
    readers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if READ.search(p.read_text())}
    assert readers == {"config.py"}


def test_every_svdmark_variable_is_named_in_config():
    named = set(re.findall(r"SVDMARK_[A-Z_]+", (PACKAGE / "config.py").read_text()))
    used = {v for p in PACKAGE.rglob("*.py") for v in re.findall(r"SVDMARK_[A-Z_]+", p.read_text())}
    assert used - {"SVDMARK_"} <= named, sorted(used - named)


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("  ", None), (" k1 ", b"k1")])
def test_pseudonym_key(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(config.PSEUDONYM_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(config.PSEUDONYM_KEY_ENV, value)
    assert config.pseudonym_key_from_env() == expected


def test_readers(monkeypatch, tmp_path):
    for var in (config.CONFIG_FILE_ENV, config.TEMPLATES_ENV, config.INFER_THREADS_ENV, config.TRT_CACHE_ENV,
                config.LOG_FORMAT_ENV):
        monkeypatch.delenv(var, raising=False)
    assert (config.config_file_from_env(), config.templates_dir_from_env(), config.infer_threads_from_env(),
            config.trt_cache_from_env(), config.log_format_from_env()) == (None, None, None, None, "")
    monkeypatch.setenv(config.CONFIG_FILE_ENV, "~/svdmark.toml")
    monkeypatch.setenv(config.TEMPLATES_ENV, str(tmp_path))
    monkeypatch.setenv(config.INFER_THREADS_ENV, "0")
    monkeypatch.setenv(config.TRT_CACHE_ENV, "/cache")
    monkeypatch.setenv(config.LOG_FORMAT_ENV, " JSON ")
    monkeypatch.setenv("SITE_STOW_TOKEN", " t0k ")
    assert config.config_file_from_env() == Path("~/svdmark.toml").expanduser()
    assert config.templates_dir_from_env() == tmp_path
    assert config.infer_threads_from_env() == 1
    assert config.trt_cache_from_env() == "/cache"
    assert config.log_format_from_env() == "json"
    assert config.secret_from_env("SITE_STOW_TOKEN") == "t0k"
    assert config.secret_from_env(None) == config.secret_from_env("SITE_UNSET_VARIABLE") == ""
