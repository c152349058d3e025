"""Shared fixtures: small generated phantoms and studies (session-scoped, seconds to build); a real PostgreSQL."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_health_problems_from_earlier_tests():
    """/healthz problems are process-wide state; a test that drove a loop or a worker by hand may leave one."""
    from svdmark import health

    for name in health.problems():
        health.clear_problem(name)


@pytest.fixture(scope="session")
def ncct_phantom():
    from svdmark_phantom import make_ncct

    return make_ncct(seed=11, matrix=64, slice_thickness=5.0, wml_ml=4.0)


@pytest.fixture(scope="session")
def swi_phantom():
    from svdmark_phantom import make_swi

    return make_swi(seed=12, matrix=64, slice_thickness=2.5, n_cmb=6)


@pytest.fixture(scope="session")
def ncct_study(tmp_path_factory):
    """A Siemens NCCT study with distractors (localizer, bone kernel, contrast CT); returns StudyTruth."""
    from svdmark_phantom import write_study

    out = tmp_path_factory.mktemp("ncct_study")
    return write_study(out, seed=21, kind="ncct", vendor="siemens", matrix=48, n_slices=6, slice_thickness=5.0,
                       wml_ml=3.0)


@pytest.fixture(scope="session")
def swi_study(tmp_path_factory):
    """A Siemens SWI study with distractors (localizer, magnitude, phase, minIP, FLAIR); returns StudyTruth."""
    from svdmark_phantom import write_study

    out = tmp_path_factory.mktemp("swi_study")
    return write_study(out, seed=22, kind="swi", vendor="siemens", matrix=48, n_slices=10, slice_thickness=2.0,
                       n_cmb=5)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (tests/pgserver.py), one per session, started by the first test that asks."""
    from tests.pgserver import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty database on the session's server; dropped after the test."""
    import secrets

    import psycopg

    name = f"test_{secrets.token_hex(6)}"
    url = postgres_server.create_database(name)
    yield url
    try:
        postgres_server.drop_database(name)
    except psycopg.Error:
        pass  # the test may have stopped or broken the server; the session's stop() removes it all


@pytest.fixture(scope="session", autouse=True)
def _journal_server(request):
    """Under ``SVDMARK_TEST_JOURNAL=postgresql``: the session's server takes every journal the tests make,
    from the first fixture on (session and module fixtures are set up before a test's own)."""
    from tests import journaldb

    if journaldb.ENGINE == "postgresql":
        journaldb.use_server(request.getfixturevalue("postgres_server"))
    yield


@pytest.fixture(autouse=True)
def _journal_engine(request, monkeypatch):
    """Under ``SVDMARK_TEST_JOURNAL=postgresql``: this test's svdmark processes get a fresh PostgreSQL journal."""
    from tests import journaldb

    if journaldb.ENGINE != "postgresql":
        yield
        return
    if request.node.get_closest_marker("embedded_journal"):
        with journaldb.embedded():
            yield
        return
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    with journaldb.for_test(tmp) as url:
        monkeypatch.setenv("SVDMARK_JOURNAL", url)
        yield
    if tmp is not None:  # which tests still made a SQLite journal (their own, or a leak)
        made = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*.sqlite"))
        if made:
            _SQLITE_UNDER_POSTGRESQL[request.node.nodeid] = made


_SQLITE_UNDER_POSTGRESQL: dict[str, list[str]] = {}


def pytest_sessionfinish(session):
    """A pytest-xdist worker hands its findings to the controller, which writes the summary."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["sqlite_under_postgresql"] = dict(_SQLITE_UNDER_POSTGRESQL)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _SQLITE_UNDER_POSTGRESQL.update(getattr(node, "workeroutput", {}).get("sqlite_under_postgresql", {}))


def pytest_terminal_summary(terminalreporter):
    """Under SVDMARK_TEST_JOURNAL=postgresql: the tests that made SQLite journals anyway (by design or a leak)."""
    if _SQLITE_UNDER_POSTGRESQL:
        terminalreporter.section("SQLite journals made while the suite ran on PostgreSQL")
        for nodeid, files in sorted(_SQLITE_UNDER_POSTGRESQL.items()):
            terminalreporter.write_line(f"{nodeid}: {', '.join(files[:3])}{' …' if len(files) > 3 else ''}")


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request, tmp_path):
    """A journal URL on each engine: a fresh SQLite file, then a fresh PostgreSQL database (the real server)."""
    if request.param == "sqlite":
        return str(tmp_path / "j.sqlite")
    return request.getfixturevalue("postgres_url")
