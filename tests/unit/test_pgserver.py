"""tests/pgserver.py: a real PostgreSQL keeps committed rows across a crash restart; databases are per test."""
from __future__ import annotations

import psycopg
import pytest


def test_committed_row_survives_immediate_restart(postgres_server, postgres_url):
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE jobs (id integer PRIMARY KEY, note text NOT NULL)")
        conn.execute("INSERT INTO jobs VALUES (1, %s)", ("ünïcode ok",))
        conn.commit()
        assert conn.execute("SELECT note FROM jobs WHERE id = 1").fetchone() == ("ünïcode ok",)

        postgres_server.restart("immediate")

        with pytest.raises(psycopg.OperationalError):  # the crash took the old connection with it
            conn.execute("SELECT 1")

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT id, note FROM jobs").fetchall() == [(1, "ünïcode ok")]
    assert "database system was interrupted" in postgres_server.log_path.read_text()  # it did crash-recover


def test_each_test_gets_its_own_empty_database(postgres_server, postgres_url):
    other = postgres_server.create_database("pgserver_other")
    try:
        assert other != postgres_url
        for url in (postgres_url, other):
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
        with psycopg.connect(postgres_url) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)
    finally:
        postgres_server.drop_database("pgserver_other")
