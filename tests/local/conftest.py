"""Fixtures for `make run`: the local server as a real process on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.postgres import free_port
from tests.support import ROOT


class LocalServer:
    """`python -m localrun` in a subprocess; its output lines are collected."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SESSION_", "DATABASE_URL", "DASHBOARD", "MAIL_", "PUBLIC_BASE_URL"))}
        self.process = subprocess.Popen([sys.executable, "-m", "localrun"], cwd=ROOT, text=True,
                                        env={**full_env, "PORT": str(self.port), **env},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 60
        while not any("is running at" in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("local server did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self) -> int:
        """Ctrl-C, as a developer would; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=30)
        time.sleep(0.1)  # let the reader thread collect the last lines
        return code


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """start_server(DATABASE_URL=..., ...) runs a local server; all are stopped at the end."""
    servers: list[LocalServer] = []

    def _start(**env: str) -> LocalServer:
        env.setdefault("DASHGATE_LOCAL_DIR", str(tmp_path / "local"))
        server = LocalServer(env)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()
