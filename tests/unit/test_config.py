from pathlib import Path

import pytest

from svdmark.config import Config, Destination, load
from svdmark.errors import ConfigError


def test_defaults_are_valid():
    cfg = load(env={})
    assert cfg.ae_title == "SVDMARK" and cfg.port == 11112 and cfg.destinations == ()


def test_file_then_env_then_flags(tmp_path: Path):
    f = tmp_path / "svdmark.toml"
    f.write_text(
        '[listener]\nport = 2000\nae_title = "FILEAE"\n[assemble]\nsettle_seconds = 1.5\n'
        '[[destinations]]\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 104\noutputs = ["sr"]\n'
    )
    cfg = load(f, env={})
    assert (cfg.port, cfg.ae_title, cfg.settle_seconds) == (2000, "FILEAE", 1.5)
    assert cfg.destinations == (Destination("PACS", "10.0.0.5", 104, frozenset({"sr"})),)
    cfg = load(f, env={"SVDMARK_PORT": "3000", "SVDMARK_AE_TITLE": "ENVAE"})
    assert (cfg.port, cfg.ae_title) == (3000, "ENVAE")
    cfg = load(f, env={"SVDMARK_PORT": "3000"}, port=4000, destinations=["X@127.0.0.1:5"])
    assert cfg.port == 4000
    assert cfg.destinations == (Destination("X", "127.0.0.1", 5),)


@pytest.mark.parametrize("text", ["PACS", "PACS@host", "PACS@host:notaport", "@h:1", "WAYTOOLONGAETITLE1@h:1"])
def test_bad_destination_is_named(text):
    with pytest.raises(ConfigError, match="destination"):
        Destination.parse(text)


def test_unknown_setting_is_refused(tmp_path: Path):
    f = tmp_path / "c.toml"
    f.write_text("[listener]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting \[listener\] prot"):
        load(f, env={})


def test_settle_must_not_exceed_fallback():
    with pytest.raises(ConfigError, match="settle_seconds"):
        Config(settle_seconds=10, fallback_seconds=5).validate()


def test_retention_is_off_unless_days_are_set_and_its_values_are_checked(tmp_path: Path):
    assert load(env={}).retention_days is None
    f = tmp_path / "r.toml"
    f.write_text("[retention]\nolder_than_days = 30\nkeep_results = true\nevery_hours = 6\n")
    cfg = load(f, env={})
    assert (cfg.retention_days, cfg.retention_keep_results, cfg.retention_every_hours) == (30.0, True, 6.0)
    with pytest.raises(ConfigError, match="older_than_days"):
        Config(retention_days=-1).validate()
    for hours in (0, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="every_hours"):
            Config(retention_days=30, retention_every_hours=hours).validate()
