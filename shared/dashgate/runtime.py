"""Runtime: what an execution environment builds once, and the wrapper every Lambda handler shares."""

from __future__ import annotations

import contextlib
import importlib
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dashgate.lazy import defer_powertools

defer_powertools()  # before the first Powertools import (dashgate.lazy)

from aws_lambda_powertools import Logger, Metrics  # noqa: E402
from aws_lambda_powertools.metrics import MetricUnit  # noqa: E402

from dashgate import snapstart  # noqa: E402
from dashgate.errors import ConfigurationError, DashgateError, ServiceUnavailable  # noqa: E402
from dashgate.settings import Settings  # noqa: E402
from dashgate.store import Store  # noqa: E402

# Imported where they are used, so that each function loads only what its requests need: health
# never imports argon2, itsdangerous or the service layer, logout never imports argon2 (`make bench`
# measures the import time; a cold start pays for every module it loads).
if TYPE_CHECKING:
    from dashgate.edge import Edge
    from dashgate.mailqueue import MailQueue
    from dashgate.passwords import Passwords
    from dashgate.recovery import Recovery
    from dashgate.sessions import KeyRing, Tokens
    from dashgate.users import Users

def load_passwords(settings: Settings) -> Passwords:
    """The password hasher; argon2 is imported only by the functions that hash (register, login)."""
    from dashgate.passwords import Passwords

    return Passwords(settings)


def utcnow() -> datetime:
    """The current time, timezone-aware (the clock handlers pass down)."""
    return datetime.now(UTC)


class Runtime:
    """Settings, store, signing keys, logger and metrics of one function, built at cold start."""

    def __init__(self, service: str, *, sessions: bool = True, passwords: bool = False,
                 health_timeouts: bool = False, mail: bool = False) -> None:
        self.service = service
        self.settings = Settings.from_env()
        self.logger = Logger(service=f"dashgate-{service}")
        self.metrics = Metrics(namespace=self.settings.metrics_namespace, service=f"dashgate-{service}")
        timeout = self.settings.healthcheck_timeout_seconds if health_timeouts else None
        self.store = Store.from_settings(
            self.settings, application_name=f"dashgate-{service}", connect_timeout=timeout,
            statement_timeout_ms=timeout * 1000 if timeout else None,
        )
        self.passwords = load_passwords(self.settings) if passwords else None
        #: The mail queue of the functions that send mail (account recovery, registration).
        self.mail_queue: MailQueue | None = None
        if mail:
            from dashgate.mailqueue import queue_for

            self.mail_queue = queue_for(self.settings)
        #: The clock every request reads (`now()`); tests replace it to simulate hours and days.
        self.clock: Callable[[], datetime] = utcnow
        self._rings: list[KeyRing] = []
        self.keys: KeyRing | None = None
        if sessions:  # keys and the service layer at init, not on the function's first request
            from dashgate.sessions import KeyRing

            self.keys = self.key_ring(KeyRing.for_sessions)
            importlib.import_module("dashgate.users")
        snapstart.register_hooks(self.before_snapshot, self.after_restore)

    def key_ring(self, make: Callable[..., KeyRing], *, what: str = "session signing keys") -> KeyRing:
        """`make(settings, on_error=...)`'s key ring, read now, again every SIGNING_KEYS_TTL_SECONDS and
        after a SnapStart restore; a failure to read it is logged (at cold start, answered 503 until a
        request reads it)."""

        def unavailable(exc: Exception) -> None:
            self.logger.error(f"Could not read the {what}", extra={"cause": type(exc).__name__,
                                                                  "detail": str(exc)[:500]})

        ring = make(self.settings, on_error=unavailable)
        with contextlib.suppress(ServiceUnavailable):  # logged; read again at the first request
            _ = ring.current
        self._rings.append(ring)
        return ring

    def now(self) -> datetime:
        """The current time, from the runtime's clock."""
        return self.clock()

    @property
    def tokens(self) -> Tokens:
        """The token signer over the current signing keys (read again every SIGNING_KEYS_TTL_SECONDS)."""
        if self.keys is None:
            raise ConfigurationError(f"dashgate-{self.service} was built without signing keys")
        return self.keys.current

    @property
    def users(self) -> Users:
        """The service layer over this runtime's store, tokens and passwords."""
        from dashgate.users import Users

        return Users(self.settings, self.store, self.tokens, self.passwords)

    @property
    def recovery(self) -> Recovery:
        """Account recovery over this runtime's store, tokens (if built with them), passwords and mail queue."""
        from dashgate.recovery import Recovery

        return Recovery(self.settings, self.store, self.tokens if self.keys is not None else None,
                        self.passwords, self.mail_queue, log=self.logger)

    def before_snapshot(self) -> None:
        """SnapStart: close the database connection, which would be dead, and shared, after a restore."""
        self.store.close()

    def after_restore(self) -> None:
        """SnapStart: give this restored environment its own random state and fresh secrets."""
        # Every environment restored from one snapshot starts with the same memory (AWS: "Handling
        # uniqueness with Lambda SnapStart"): re-seed what was drawn at init. `secrets` reads the
        # OS each time and needs nothing.
        random.seed()
        if self.passwords is not None:
            self.passwords.reseed()
        # The snapshot may be weeks old: read the database credentials and the signing keys again
        # (rotation), lazily, so the restore never waits on Secrets Manager.
        self.store.reset()
        for ring in self._rings:
            ring.forget()

    def count(self, metric: str) -> None:
        """Add one to a CloudWatch metric (Embedded Metric Format, flushed after the request)."""
        self.metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)

    def correlated(self, handler: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
        """`handler` with the Lambda context on every log line and the API Gateway request id as its
        correlation id (read straight from the event: Powertools' `correlation_id_path` would load
        JMESPath for one dictionary lookup)."""

        def correlated_handler(event: dict[str, Any], context: Any) -> Any:
            request_context = event.get("requestContext") if isinstance(event, dict) else None
            self.logger.set_correlation_id(
                request_context.get("requestId") if isinstance(request_context, dict) else None)
            return handler(event, context)

        correlated_handler.__name__ = handler.__name__
        return self.logger.inject_lambda_context(correlated_handler)

    def handler(self, edge: Edge) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        """The function's `lambda_handler(event, context)`: `edge.resolve` (which answers every event),
        correlated, with the metrics flushed. The gateway's access log has a line per request (id,
        method, path, status, latencies); the function logs what it alone knows: refusals, failures."""

        def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            return edge.resolve(event if isinstance(event, dict) else {}, context)

        wrapped = self.metrics.log_metrics(self.correlated(lambda_handler))
        wrapped.__name__ = "lambda_handler"
        return wrapped

    def log_error(self, err: DashgateError) -> None:
        """Log why a dependency failed (the response itself carries no detail)."""
        cause = err.__cause__
        if isinstance(err, ServiceUnavailable) and cause is not None:
            self.logger.error("Dependency unavailable",
                              extra={"cause": type(cause).__name__, "detail": str(cause)[:500]})
