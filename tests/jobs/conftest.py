"""PostgreSQL for the job-source tests: one throwaway server per session, a fresh database per test.

Without a server the tests that need it are skipped, except under CI (env ``CI`` set), where
they fail: CI must run them (``make test`` installs the server).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.jobs import pgserver


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.PgServer]:
    try:
        server = pgserver.start()
    except pgserver.PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: pgserver.PgServer) -> Iterator[str]:
    """A fresh database with wanflash's and procrastinate's schema."""
    from wanflash.jobs.postgres import PostgresJobSource
    from wanflash.jobs.source import refuse_terminal_writes

    url = pg_server.create_database()
    src = PostgresJobSource(url, outbox=refuse_terminal_writes)
    try:
        src.migrate()
    finally:
        src.close()
    yield url
    pg_server.drop_database(url)
