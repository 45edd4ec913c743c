"""Store: the one module that knows SQL — users, sessions, throttle counters and migrations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import class_row

from dashgate.errors import EmailTaken, ServiceUnavailable
from dashgate.settings import Settings, fetch_secret_string

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: pg_advisory_xact_lock key for migrations: any constant shared by every migrating process.
MIGRATION_LOCK_KEY = 0x6461_7368_6761_7465 & 0x7FFF_FFFF_FFFF_FFFF  # "dashgate"
#: SQLSTATEs after which the server certainly did not run our statement: the backend was
#: terminated or was starting/stopping (PostgreSQL Appendix A, class 57), so one retry is safe.
#: Expired sessions and quiet counters older than this are pruned, a batch at each successful login.
STALE_AFTER = timedelta(days=1)
RETRYABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05"})  # 57P05: idle_session_timeout


@dataclass(frozen=True)
class User:
    """A user as the API shows it."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    created_at: datetime

    def as_json(self) -> dict[str, object]:
        """The SPEC's `user` object."""
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Hits:
    """A throttle counter's state."""

    hits: int
    window_started_at: datetime
    last_hit_at: datetime


@dataclass(frozen=True)
class LoginAttempt:
    """What opening a login attempt tells: the user (if any), the keys that refused it, and the
    counters as they were before it (for Retry-After)."""

    user: User | None
    password_hash: str | None
    refused: set[str]
    email_hits: Hits | None
    ip_hits: Hits | None


@dataclass(frozen=True)
class Registration:
    """The outcome of a registration statement: the counter after this attempt, and the user if created."""

    hits: Hits
    user: User | None


@dataclass(frozen=True)
class NewSession:
    """A session row to insert."""

    id_hash: bytes
    remember: bool
    expires_at: datetime


# -- SQL --------------------------------------------------------------------------------------
# One statement: count the attempt against the IP, then insert unless throttled or taken.
# ON CONFLICT DO NOTHING makes concurrent registrations of one address wait for the first and
# then insert nothing, so exactly one row exists and the others read as "taken".
REGISTER_USER = """
    WITH hit AS (    INSERT INTO public.dashgate_throttle AS t (key, hits, window_started_at, last_hit_at)
        VALUES (%(key)s, 1, %(now)s, %(now)s)
        ON CONFLICT (key) DO UPDATE SET
            hits = CASE WHEN t.window_started_at <= %(window_cutoff)s THEN 1 ELSE t.hits + 1 END,
            window_started_at = CASE WHEN t.window_started_at <= %(window_cutoff)s
                                     THEN %(now)s ELSE t.window_started_at END,
            last_hit_at = %(now)s
        RETURNING hits, window_started_at, last_hit_at
    ),
    created AS (
        INSERT INTO public.users (email, password_hash, first_name, last_name, created_at, login_count)
        SELECT %(email)s, %(password_hash)s, %(first_name)s, %(last_name)s, %(now)s, 0
        FROM hit WHERE hit.hits <= %(limit)s
        ON CONFLICT (email) DO NOTHING
        RETURNING id, email, first_name, last_name, created_at
    )
    SELECT hit.hits, hit.window_started_at, hit.last_hit_at,
           created.id, created.email, created.first_name, created.last_name, created.created_at
    FROM hit LEFT JOIN created ON true
"""

# One statement opens a login attempt: it counts the attempt against the email and the IP, unless
# one of them is in backoff (then nothing is counted for it and the attempt is refused), and reads
# the user. Counting before verifying, under the counters' row locks, means parallel guesses cannot
# all slip in below the limit. A failed attempt then needs nothing more; a successful one takes its
# count back (RECORD_LOGIN_SUCCESS). Counts restart from 1 after a quiet window.
CLAIM_LOGIN_ATTEMPT = """
    WITH before AS (
        SELECT key, hits, window_started_at, last_hit_at FROM public.dashgate_throttle
        WHERE key IN (%(email_key)s, %(ip_key)s)
    ), claimed AS (
        INSERT INTO public.dashgate_throttle AS t (key, hits, window_started_at, last_hit_at)
        VALUES (%(email_key)s, 1, %(now)s, %(now)s), (%(ip_key)s, 1, %(now)s, %(now)s)
        ON CONFLICT (key) DO UPDATE SET
            hits = CASE WHEN t.last_hit_at <= %(quiet_cutoff)s THEN 1 ELSE t.hits + 1 END,
            window_started_at = CASE WHEN t.last_hit_at <= %(quiet_cutoff)s
                                     THEN %(now)s ELSE t.window_started_at END,
            last_hit_at = %(now)s
        WHERE t.last_hit_at <= %(quiet_cutoff)s
           OR t.hits < CASE WHEN t.key = %(email_key)s THEN %(email_limit)s ELSE %(ip_limit)s END
           OR t.last_hit_at <= %(now)s - make_interval(secs => least(
                  %(base)s * power(2, least(t.hits - CASE WHEN t.key = %(email_key)s
                                                          THEN %(email_limit)s ELSE %(ip_limit)s END, 30)),
                  %(max)s))
        RETURNING key
    )
    SELECT u.id, u.email, u.first_name, u.last_name, u.created_at, u.password_hash,
           (SELECT coalesce(array_agg(key), '{}') FROM claimed) AS claimed,
           be.hits, be.window_started_at, be.last_hit_at, bi.hits, bi.window_started_at, bi.last_hit_at
    FROM (SELECT 1) AS one
    LEFT JOIN public.users u ON lower(u.email) = %(email)s
    LEFT JOIN before be ON be.key = %(email_key)s
    LEFT JOIN before bi ON bi.key = %(ip_key)s
"""

# One statement for a successful login: forget the email's failures, revoke the session the
# client presented (never adopt it), create the new one, and record the login on the user.
RECORD_LOGIN_SUCCESS = """
    WITH cleared AS (
        DELETE FROM public.dashgate_throttle WHERE key = %(email_key)s
    ), uncounted AS (
        UPDATE public.dashgate_throttle SET hits = greatest(hits - 1, 0) WHERE key = %(ip_key)s
    ), pruned AS (  -- this user's dead sessions, and a bounded batch of anyone's long dead
        DELETE FROM public.dashgate_sessions
        WHERE (user_id = %(user_id)s AND (expires_at < %(now)s OR revoked_at IS NOT NULL))
           OR id_hash IN (SELECT id_hash FROM public.dashgate_sessions
                          WHERE expires_at < %(stale_cutoff)s LIMIT 100)
    ), stale_counters AS (  -- counters quiet for a day (unknown emails leave one each)
        DELETE FROM public.dashgate_throttle
        WHERE key IN (SELECT key FROM public.dashgate_throttle WHERE last_hit_at < %(stale_cutoff)s LIMIT 100)
    ), revoked AS (
        UPDATE public.dashgate_sessions SET revoked_at = %(now)s
        WHERE id_hash = %(presented_hash)s AND revoked_at IS NULL
    ), created AS (
        INSERT INTO public.dashgate_sessions (id_hash, user_id, remember, created_at, last_seen_at, expires_at)
        VALUES (%(id_hash)s, %(user_id)s, %(remember)s, %(now)s, %(now)s, %(expires_at)s)
    )
    UPDATE public.users SET
        last_login_at = %(now)s,
        last_login_ip = %(ip)s,
        login_count = coalesce(login_count, 0) + 1,
        password_hash = coalesce(%(new_hash)s, password_hash)
    WHERE id = %(user_id)s
"""

# Find the signed-in user and, at most every few minutes, record the use for the idle timeout.
FIND_SESSION_USER = """
    WITH found AS (
        SELECT s.id_hash, s.user_id, s.last_seen_at
        FROM public.dashgate_sessions s
        WHERE s.id_hash = %(id_hash)s AND s.revoked_at IS NULL AND s.expires_at > %(now)s
          AND (s.remember OR s.last_seen_at > %(idle_cutoff)s)
    ), touched AS (
        UPDATE public.dashgate_sessions s SET last_seen_at = %(now)s
        FROM found WHERE s.id_hash = found.id_hash AND found.last_seen_at <= %(touch_cutoff)s
    )
    SELECT u.id, u.email, u.first_name, u.last_name, u.created_at
    FROM found JOIN public.users u ON u.id = found.user_id
"""

REVOKE_SESSION = """
    UPDATE public.dashgate_sessions SET revoked_at = %(now)s
    WHERE id_hash = %(id_hash)s AND revoked_at IS NULL
"""

# "Sign out everywhere": every live session of the user whose live session this is.
REVOKE_ALL_SESSIONS = """
    UPDATE public.dashgate_sessions SET revoked_at = %(now)s
    WHERE revoked_at IS NULL AND user_id = (
        SELECT user_id FROM public.dashgate_sessions
        WHERE id_hash = %(id_hash)s AND revoked_at IS NULL AND expires_at > %(now)s
    )
"""

SET_LOCAL_TIMEOUT = "SELECT set_config('statement_timeout', %(ms)s, true)"

CREATE_MIGRATIONS_TABLE = """
    CREATE TABLE IF NOT EXISTS public.dashgate_schema_migrations (
        version text PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(%(key)s)"
APPLIED_MIGRATIONS = "SELECT version FROM public.dashgate_schema_migrations"
RECORD_MIGRATION = "INSERT INTO public.dashgate_schema_migrations (version) VALUES (%(version)s)"


class Store:
    """PostgreSQL access over one lazily opened connection per execution environment."""

    def __init__(
        self,
        conninfo: Callable[[], str],
        *,
        connect_timeout: int = 3,
        statement_timeout_ms: int = 3000,
        application_name: str = "dashgate",
        behind_proxy: bool = False,
    ) -> None:
        self._conninfo_source = conninfo
        #: RDS Proxy pins a client to one database connection on session state: server-side
        #: prepared statements and startup parameters (AWS, "Avoiding pinning an RDS Proxy").
        #: Behind it, prepare nothing and leave statement_timeout to the proxy's InitQuery.
        self._behind_proxy = behind_proxy
        self._conninfo: str | None = None
        self._connect_timeout = connect_timeout
        self._statement_timeout_ms = statement_timeout_ms
        self._application_name = application_name
        self._connection: psycopg.Connection | None = None
        #: Statements sent to the server, for the round-trip budget (and the tests that hold it).
        self.round_trips = 0
        #: Seconds spent waiting for those statements: `make bench` subtracts it to show our own overhead.
        self.db_seconds = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *, application_name: str = "dashgate",
                      connect_timeout: int | None = None, statement_timeout_ms: int | None = None) -> Store:
        """A store for DATABASE_URL, or for the RDS-style secret DB_SECRET_ARN (read at first connect)."""
        return cls(
            lambda: database_conninfo(settings),
            connect_timeout=connect_timeout or settings.db_connect_timeout,
            statement_timeout_ms=statement_timeout_ms or settings.db_statement_timeout_ms,
            application_name=application_name,
            behind_proxy=bool(settings.db_host),  # DB_HOST exists to point at an RDS Proxy
        )

    # -- operations ---------------------------------------------------------------------------
    def ping(self, sql: str) -> float:
        """Run the health query; return its latency in milliseconds."""
        def work(conn: psycopg.Connection) -> float:
            started = time.perf_counter()
            if self._behind_proxy:  # no startup option there: bound this query alone (pins only its transaction)
                with conn.transaction():
                    conn.execute(SET_LOCAL_TIMEOUT, {"ms": str(self._statement_timeout_ms)})
                    conn.execute(sql).fetchall()
            else:
                conn.execute(sql).fetchall()
            return (time.perf_counter() - started) * 1000
        return self._run(work)

    def register(self, *, email: str, password_hash: str, first_name: str, last_name: str, ip_key: str,
                 limit: int, window: timedelta, now: datetime) -> Registration:
        """Count a registration against `ip_key`; create the user unless over `limit` or taken."""
        params = {
            "key": ip_key, "now": now, "window_cutoff": now - window, "limit": limit, "email": email,
            "password_hash": password_hash, "first_name": first_name, "last_name": last_name,
        }

        def work(conn: psycopg.Connection) -> Registration:
            try:
                row = conn.execute(REGISTER_USER, params).fetchone()
            except psycopg.errors.UniqueViolation as exc:
                # Another unique index on the address (say, lower(email) on an adopted table).
                if "email" in (exc.diag.constraint_name or ""):
                    raise EmailTaken() from exc
                raise
            user = User(*row[3:]) if row[3] is not None else None
            return Registration(Hits(*row[:3]), user)
        return self._run(work)

    def claim_login_attempt(self, *, email: str, email_key: str, ip_key: str, limits: tuple[int, int],
                            backoff: tuple[int, int], quiet: timedelta, now: datetime) -> LoginAttempt:
        """Count an attempt unless throttled; the user (or None) and the counters as they were."""
        params = {"email": email, "email_key": email_key, "ip_key": ip_key, "email_limit": limits[0],
                  "ip_limit": limits[1], "base": backoff[0], "max": backoff[1], "now": now, "quiet_cutoff": now - quiet}

        def work(conn: psycopg.Connection) -> LoginAttempt:
            row = conn.execute(CLAIM_LOGIN_ATTEMPT, params).fetchone()
            user = User(*row[:5]) if row[0] is not None else None
            refused = {email_key, ip_key} - set(row[6])
            email_hits = Hits(*row[7:10]) if row[7] is not None else None
            ip_hits = Hits(*row[10:13]) if row[10] is not None else None
            return LoginAttempt(user, row[5], refused, email_hits, ip_hits)
        return self._run(work)

    def record_login_success(self, *, user_id: int, ip: str, session: NewSession, presented_hash: bytes | None,
                             new_hash: str | None, email_key: str, ip_key: str, now: datetime) -> None:
        """Create the session and record the login, in one statement."""
        params = {
            "user_id": user_id, "ip": ip, "id_hash": session.id_hash, "remember": session.remember,
            "expires_at": session.expires_at, "presented_hash": presented_hash, "new_hash": new_hash,
            "email_key": email_key, "ip_key": ip_key, "now": now, "stale_cutoff": now - STALE_AFTER,
        }
        self._run(lambda conn: conn.execute(RECORD_LOGIN_SUCCESS, params))

    def find_session_user(self, *, id_hash: bytes, now: datetime, idle: timedelta,
                          touch_every: timedelta) -> User | None:
        """The user of a live session, or None when it is unknown, revoked, expired or idle too long."""
        params = {"id_hash": id_hash, "now": now, "idle_cutoff": now - idle, "touch_cutoff": now - touch_every}

        def work(conn: psycopg.Connection) -> User | None:
            with conn.cursor(row_factory=class_row(User)) as cur:
                return cur.execute(FIND_SESSION_USER, params).fetchone()
        return self._run(work)

    def revoke_session(self, *, id_hash: bytes, now: datetime) -> bool:
        """Revoke one session; True when a live one was revoked."""
        return self._run(lambda conn: conn.execute(REVOKE_SESSION, {"id_hash": id_hash, "now": now}).rowcount == 1)

    def revoke_all_sessions(self, *, id_hash: bytes, now: datetime) -> int:
        """Revoke every live session of the user behind a live session; the number revoked."""
        return self._run(lambda conn: conn.execute(REVOKE_ALL_SESSIONS, {"id_hash": id_hash, "now": now}).rowcount)

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the versions applied now."""
        return self._run(migrate)

    def close(self) -> None:
        """Close the connection (SnapStart hooks, tests, the local server's shutdown)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def reset(self) -> None:
        """Close the connection and forget the credentials read from DB_SECRET_ARN (after a SnapStart restore)."""
        self.close()
        self._conninfo = None

    @property
    def backend_pid(self) -> int | None:
        """The server process of the open connection, if any."""
        return self._connection.info.backend_pid if self._connection and not self._connection.closed else None

    # -- connection -----------------------------------------------------------------------------
    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work` on the connection, reconnecting once when the server certainly dropped it."""
        for attempt in (1, 2):
            conn = self._connect()
            started = time.perf_counter()
            try:
                self.round_trips += 1
                return work(conn)
            except psycopg.OperationalError as exc:
                if attempt == 1 and conn.broken and _safe_to_retry(exc):
                    self.close()
                    continue
                self._discard_if_broken(conn)
                raise ServiceUnavailable() from exc
            except (psycopg.InterfaceError, psycopg.DatabaseError) as exc:
                self._discard_if_broken(conn)
                raise ServiceUnavailable() from exc
            finally:
                self.db_seconds += time.perf_counter() - started
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> psycopg.Connection:
        conn = self._connection
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self.close()
        try:
            fresh = self._conninfo is None
            if fresh:
                self._conninfo = self._conninfo_source()
            try:
                self._connection = self._open(self._conninfo)
            except psycopg.OperationalError:
                # Credentials rotate (RDS-managed secrets every 7 days by default): when the ones
                # read at cold start stop working, read the secret again, and try once more.
                renewed = None if fresh else self._conninfo_source()
                if renewed is None or renewed == self._conninfo:
                    raise
                self._conninfo = renewed
                self._connection = self._open(renewed)
        except psycopg.Error as exc:
            raise ServiceUnavailable() from exc
        except Exception as exc:  # Secrets Manager or a malformed secret: still a 503, not a crash
            raise ServiceUnavailable() from exc
        return self._connection

    def _open(self, conninfo: str) -> psycopg.Connection:
        # Timestamps in UTC whatever the server's default (adopted tables use timestamp without
        # time zone); behind RDS Proxy no startup options at all (they pin the connection).
        options = {} if self._behind_proxy else {
            "options": f"-c statement_timeout={self._statement_timeout_ms} -c timezone=UTC"}
        return psycopg.connect(
            conninfo,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            application_name=self._application_name,
            prepare_threshold=None if self._behind_proxy else 5,
            **options,
        )

    def _discard_if_broken(self, conn: psycopg.Connection) -> None:
        if conn.broken or conn.closed:
            self.close()


def _safe_to_retry(exc: psycopg.OperationalError) -> bool:
    """True when the server went away before running the statement (backend terminated)."""
    return exc.sqlstate in RETRYABLE_SQLSTATES


def database_conninfo(settings: Settings) -> str:
    """DATABASE_URL, or a conninfo string built from an RDS-style secret (DB_HOST overrides host)."""
    if settings.database_url:
        return settings.database_url
    if not settings.db_secret_arn:
        raise ServiceUnavailable("No database is configured: set DATABASE_URL or DB_SECRET_ARN.")
    secret = json.loads(fetch_secret_string(settings.db_secret_arn))
    return make_conninfo(
        host=settings.db_host or secret["host"],
        port=str(secret.get("port", 5432)),
        user=secret["username"],
        password=secret["password"],
        dbname=secret.get("dbname") or secret.get("dbName") or "postgres",
        sslmode=secret.get("sslmode", "prefer"),
    )


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the SQL files in migrations/ in order, once each, under an advisory lock."""
    applied_now = []
    with conn.transaction():
        conn.execute(LOCK_MIGRATIONS, {"key": MIGRATION_LOCK_KEY})
        conn.execute(CREATE_MIGRATIONS_TABLE)
        done = {row[0] for row in conn.execute(APPLIED_MIGRATIONS)}
        for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
            if path.stem not in done:
                conn.execute(path.read_text())
                conn.execute(RECORD_MIGRATION, {"version": path.stem})
                applied_now.append(path.stem)
    return applied_now
