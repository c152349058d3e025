"""A ``kind = "stow"`` destination in the config file: clear errors for bad entries, credentials read
only when sending (never held in the config), and a secret that cannot be read is retried, not dead."""
import re
from pathlib import Path

import pytest

from svdmark.config import Destination, StowDestination, load
from svdmark.errors import ConfigError
from svdmark.export.stow import StowExporter, _session

URL = "https://pacs.example.org/dicom-web/studies"


def _load(tmp_path: Path, body: str):
    toml = tmp_path / "svdmark.toml"
    toml.write_text('[[destinations]]\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 104\n\n'
                    f'[[destinations]]\nkind = "stow"\nurl = "{URL}"\n{body}')
    return load(toml, env={})


def test_a_stow_destination_beside_a_cstore_one(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    cfg = _load(tmp_path, f'username = "svdmark"\npassword_file = "{secret}"\noutputs = ["sr"]\n')
    cstore, stow = cfg.destinations
    assert isinstance(cstore, Destination) and isinstance(stow, StowDestination)
    assert stow.name == f"stow:{URL}" and stow.outputs == {"sr"} and stow.tls_verify
    assert "s3cret" not in repr(cfg)
    with _session(stow) as s:
        assert s.auth == ("svdmark", "s3cret")


def test_a_bearer_token_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SVDMARK_TEST_STOW_TOKEN", "tok-123")
    cfg = _load(tmp_path, 'token_env = "SVDMARK_TEST_STOW_TOKEN"\n')
    stow = cfg.destinations[1]
    assert "tok-123" not in repr(cfg)
    with _session(stow) as s:
        assert s.headers["Authorization"] == "Bearer tok-123" and s.auth is None


@pytest.mark.parametrize("body, message", [
    ('username = "a"\n', "basic auth needs both username and password"),
    ('password_env = "X"\ntoken_env = "Y"\n', "give one of"),
    ('token_env = "SVDMARK_TEST_UNSET_VARIABLE"\n', "environment variable SVDMARK_TEST_UNSET_VARIABLE is not set"),
    ('token_file = "/nonexistent/token"\n', "token_file /nonexistent/token does not exist"),
    ('ca_file = "/nonexistent/ca.pem"\n', "ca_file /nonexistent/ca.pem does not exist"),
    ('timeout = 0\n', "timeout must be more than 0"),
    ('passwd = "x"\n', "unknown key(s) ['passwd']"),
])
def test_bad_stow_entries_are_refused_with_a_clear_error(tmp_path, body, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, body)
    assert message in str(err.value)


@pytest.mark.parametrize("url, message", [
    ("ftp://pacs/x", "is not an http(s) URL"),
    ("https://svdmark:s3cret@pacs/dicom-web/studies", "must not hold credentials"),
])
def test_bad_urls_are_refused_and_credentials_in_one_not_echoed(tmp_path, url, message):
    (tmp_path / "svdmark.toml").write_text(f'[[destinations]]\nkind = "stow"\nurl = "{url}"\n')
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        load(tmp_path / "svdmark.toml", env={})
    assert "s3cret" not in str(err.value)


def test_an_unknown_kind_is_refused(tmp_path):
    (tmp_path / "svdmark.toml").write_text('[[destinations]]\nkind = "ftp"\nurl = "x"\n')
    with pytest.raises(ConfigError, match="kind 'ftp' unknown"):
        load(tmp_path / "svdmark.toml", env={})


def test_a_password_file_gone_after_start_is_retried_not_dead(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    stow = _load(tmp_path, f'username = "svdmark"\npassword_file = "{secret}"\n').destinations[1]
    secret.unlink()
    outcomes = StowExporter().send(stow, [tmp_path / "a.dcm"])
    assert len(outcomes) == 1 and not outcomes[0].ok and not outcomes[0].permanent
    assert "cannot read the password file" in outcomes[0].detail
