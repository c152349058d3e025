"""The listener's connection and SOP-class settings: from TOML, validated with a clear message."""
import pytest

from svdmark.config import Config, load
from svdmark.errors import ConfigError


def test_listener_settings_from_toml(tmp_path):
    f = tmp_path / "svdmark.toml"
    f.write_text('[listener]\nrequest_timeout = 2.5\nmax_connections_per_host = 4\nunsupported_sop_class = "refuse"\n')
    cfg = load(f, env={})
    assert (cfg.request_timeout, cfg.max_connections_per_host, cfg.unsupported_sop_class) == (2.5, 4, "refuse")


def test_defaults():
    cfg = Config()
    assert (cfg.request_timeout, cfg.max_connections_per_host, cfg.unsupported_sop_class) == (5.0, 16, "discard")


@pytest.mark.parametrize("change, words", [
    ({"unsupported_sop_class": "drop"}, "unsupported_sop_class must be one of discard, refuse"),
    ({"request_timeout": 0}, "request_timeout"),
    ({"max_connections_per_host": 0}, "max_connections_per_host must be at least 1"),
])
def test_bad_values_are_refused(change, words):
    with pytest.raises(ConfigError, match=words):
        Config(**change).validate()
