"""The benchmark's PostgreSQL: DATABASE_URL's server when set, else a throwaway cluster, as `make test` does."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dashgate.store import Store
from tests.support import ThrowawayCluster


@contextlib.contextmanager
def bench_database() -> Iterator[tuple[str, str]]:
    """Yield (url of a fresh migrated database, description of the server); drop or stop it afterwards."""
    server = os.environ.get("DATABASE_URL")
    cluster = None
    if not server:
        cluster = ThrowawayCluster()
        server = cluster.start()
    where = "DATABASE_URL's server" if cluster is None else "a throwaway local cluster (fsync off)"
    name = f"dashgate_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = make_conninfo(**{**conninfo_to_dict(server), "dbname": name})
        store = Store(lambda: url)
        store.migrate()
        store.close()
        yield url, where
    finally:
        with contextlib.suppress(psycopg.Error), psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if cluster is not None:
            cluster.stop()
