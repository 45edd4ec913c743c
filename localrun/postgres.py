"""An embedded PostgreSQL: a private cluster in a folder, started from the machine's own binaries."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import psycopg

INSTALL_HINT = (
    "PostgreSQL's server programs (initdb, pg_ctl) were not found. Install them "
    "(Debian/Ubuntu: sudo apt install postgresql; Fedora: sudo dnf install postgresql-server; "
    "macOS: brew install postgresql@16), or set DATABASE_URL to a PostgreSQL you already have."
)
DATABASE = "dashgate"
#: Debian and Ubuntu keep the server programs here, off PATH.
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def pg_bin(name: str) -> str:
    """A server program: on PATH, or in Debian's versioned folder (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(DEBIAN_PG_ROOT.glob(f"*/bin/{name}"), reverse=True)
    if not candidates:
        raise PostgresNotFound(INSTALL_HINT)
    return str(candidates[0])


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A cluster under `directory` (data/, log, socket). PostgreSQL refuses to run as root, so a
    root user runs it as `postgres`."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory.resolve()
        self.data = self.dir / "data"
        self.as_root = os.geteuid() == 0
        self.started_here = False
        self.port = port

    def start(self) -> str:
        """Create the cluster if needed, start it unless running; return the dashgate database's URL."""
        pg_ctl = pg_bin("pg_ctl")
        if not (self.data / "PG_VERSION").exists():
            self._init()
        running = self._running_port()
        if running is not None:
            self.port = running
        else:
            self.port = self.port or free_port()
            options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
            self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
            self.started_here = True
        self._create_database()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self, *, force: bool = False) -> None:
        """Stop the server if this process started it (or regardless, with `force`)."""
        if self.started_here or force:
            with contextlib.suppress(Exception):
                self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.started_here = False

    def destroy(self) -> None:
        """Stop whatever runs there and delete the folder (throwaway clusters)."""
        with contextlib.suppress(Exception):
            self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _init(self) -> None:
        initdb = pg_bin("initdb")
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.dir, "postgres")
        self.dir.chmod(0o700)
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def _running_port(self) -> int | None:
        """The port of a server already running on this data folder (postmaster.pid, line 4)."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        status = subprocess.run(self._as_owner(pg_bin("pg_ctl"), "-D", str(self.data), "status"),
                                capture_output=True, check=False)
        if status.returncode != 0:
            return None
        return int(pid_file.read_text().splitlines()[3])

    def _create_database(self) -> None:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _as_owner(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self.as_root else list(args)

    def _run(self, *args: str) -> None:
        result = subprocess.run(self._as_owner(*args), capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}")
