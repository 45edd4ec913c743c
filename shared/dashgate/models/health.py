"""GET /healthcheck/ as JSON."""

from __future__ import annotations

from pydantic import Field

from dashgate.models import Reply


class DatabaseOut(Reply):
    ok: bool
    latency_ms: float | None = None


class HealthOut(Reply):
    """GET /healthcheck/ as JSON."""

    status: str = Field(description='"ok" or "unavailable".')
    database: DatabaseOut
    message: str | None = None
