"""A hospital's config file as typed: a typo, a wrong shape or a nonsense value is one sentence naming it, never
silence or a traceback (found by a review)."""
import pytest
from svdmark import config
from svdmark.errors import ConfigError
from svdmark.cli.main import main


def _load(tmp_path, text):
    p = tmp_path / "svdmark.toml"
    p.write_text(text)
    return config.load(p, env={})


DEST = '[[destinations]]\nae_title = "PACS"\nhost = "10.0.0.5"\nport = 104\n'


def test_typo_in_cstore_destination_key_is_an_error(tmp_path):
    # admin-guide: "an unknown key is an error"; STOW entries reject unknown keys, C-STORE ones do not.
    # 'output' (for 'outputs') silently gives the full profile (SEG + SR + summary) to the PACS.
    with pytest.raises(ConfigError):
        _load(tmp_path, DEST + 'output = ["sr"]\n')


def test_typo_tls_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError):
        _load(tmp_path, DEST + 'tsl = true\n')


def test_destination_port_zero_and_empty_host_rejected(tmp_path):
    with pytest.raises(ConfigError):
        _load(tmp_path, '[[destinations]]\nae_title = "PACS"\nhost = ""\nport = 0\n')


@pytest.mark.parametrize("text", [
    '[listener]\ndimse_timeout = -5\n',
    '[listener]\nnetwork_timeout = -1\n',
    '[listener]\nmax_pdu = -3\n',
    '[export]\nbackoff_seconds = -1\n',
    '[export]\nbackoff_cap_seconds = -5\n',
    '[assemble]\nincomplete_max_wait_seconds = -10\n',
    '[analysis]\nworkers = 0\n',
    '[assemble]\nsettle_seconds = nan\nfallback_seconds = nan\n',
    '[listener]\nport = 104.7\n',
    '[listener]\nae_title = ["X"]\n',
    '[logging]\nlevel = "DEBUGG"\n',
])
def test_nonsense_values_rejected(tmp_path, text):
    with pytest.raises(ConfigError):
        _load(tmp_path, text)


@pytest.mark.parametrize("text", [
    '[destinations]\nae_title = "PACS"\nhost = "h"\nport = 104\n',   # [ ] instead of [[ ]]
    'destinations = ["PACS@h:104"]\n',
])
def test_destinations_wrong_shape_is_one_sentence_not_traceback(tmp_path, text, capsys):
    p = tmp_path / "svdmark.toml"
    p.write_text(text)
    rc = main(["status", "--config", str(p), "--data-dir", str(tmp_path / "d")])  # AttributeError escapes today
    assert rc != 0
    assert "Traceback" not in capsys.readouterr().err


def test_values_that_worked_before_still_load(tmp_path):
    """A second read: 'warn' is a level serve has always taken; 0 s of extra wait for an incomplete series means
    the fallback alone (svdmark.completion)."""
    assert config.load(None, env={"SVDMARK_LOG_LEVEL": "warn"}).log_level == "warn"
    assert config.log_level("warn") == "WARNING"
    assert _load(tmp_path, "[assemble]\nincomplete_max_wait_seconds = 0\n").incomplete_max_wait_seconds == 0


def test_a_destination_on_port_0_is_refused_from_a_table_and_from_a_string(tmp_path):
    with pytest.raises(ConfigError, match="outside 1-65535"):
        _load(tmp_path, '[[destinations]]\nae_title = "PACS"\nhost = "h"\nport = 0\n')
    with pytest.raises(ConfigError, match="outside 1-65535"):
        config.Destination.parse("PACS@h:0")
