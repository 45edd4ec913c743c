"""Store: the one module that knows SQL — users, sessions, throttle counters and migrations."""

from __future__ import annotations

import contextlib
import json
import select
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from dashgate.lazy import PSYCOPG_ASYNCIO_NAMES, defer_init

defer_init("asyncio", PSYCOPG_ASYNCIO_NAMES)  # a sync client need not start asyncio (dashgate.lazy)

import psycopg  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402
from psycopg.errors import _WaitTimeout  # noqa: E402
from psycopg.rows import class_row  # noqa: E402

from dashgate.errors import EmailTaken, NotSignedIn, ServiceUnavailable  # noqa: E402
from dashgate.settings import Settings, fetch_secret_string  # noqa: E402

T = TypeVar("T")


class ServerSilent(psycopg.OperationalError):
    """The server did not answer within the round-trip bound: asking again would only wait again."""


class BoundedConnection(psycopg.Connection):
    """A connection on which every wait for the server ends within `round_trip_timeout` seconds.

    statement_timeout is enforced by the server, so it cannot help when the server, or a relay
    on the way, goes silent mid-connection; TCP's tcp_user_timeout helps only when packets go
    unacknowledged. This bound holds in both cases: the connection is closed, and the caller gets
    an OperationalError (a 503), not a wait until the Lambda timeout.
    """

    round_trip_timeout: float | None = None
    idle_poller: Any = None  # select.poll on the socket, for _spoke_while_idle

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        """Wait as psycopg does, but never longer than `round_trip_timeout`."""
        try:
            return super().wait(gen, interval=interval, timeout=timeout or self.round_trip_timeout)
        except _WaitTimeout:
            self.pgconn.finish()  # its state is unknown: never use it again
            raise ServerSilent(
                f"the database did not answer within {self.round_trip_timeout} seconds") from None

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
#: pg_advisory_xact_lock key for migrations: any constant shared by every migrating process.
MIGRATION_LOCK_KEY = 0x6461_7368_6761_7465 & 0x7FFF_FFFF_FFFF_FFFF  # "dashgate"
#: A migration waits at most this long for a table lock: while it waits, every later query on that
#: table queues behind it, so the dashboard stalls at most this long (SPEC: Data), then it retries.
MIGRATION_LOCK_TIMEOUT_MS = 2000
MIGRATION_ATTEMPTS = 10
#: One statement of a migration (an index build on a big table) may run this long.
MIGRATION_STATEMENT_TIMEOUT_MS = 120_000
#: SQLSTATEs after which the server certainly did not run our statement: the backend was
#: terminated or was starting/stopping (PostgreSQL Appendix A, class 57), so one retry is safe.
RETRYABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05"})  # 57P05: idle_session_timeout
#: Deadlock and serialization failure: the server rolled the transaction back, so running it again
#: is safe (PostgreSQL 13.6: "applications ... should be prepared to retry").
ROLLED_BACK_SQLSTATES = frozenset({"40P01", "40001"})
ROLLED_BACK_ATTEMPTS = 3
#: A round trip may take the statement timeout plus this before the client gives up on a server
#: that went silent (no answer, no reset): the server's own timeout should always fire first.
ROUND_TRIP_MARGIN_SECONDS = 1.0
#: TCP keepalives for idle pooled/warm connections (libpq parameters): a dead peer is noticed in
#: about idle + interval * count seconds instead of the kernel's two hours.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 5, "keepalives_count": 3}


@dataclass(frozen=True)
class User:
    """A user as the API shows it."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    created_at: datetime
    email_confirmed: bool

    def as_json(self) -> dict[str, object]:
        """The SPEC's `user` object."""
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "created_at": self.created_at.isoformat(),
            "email_confirmed": self.email_confirmed,
        }


@dataclass(frozen=True)
class Hits:
    """A throttle counter's state."""

    hits: int
    window_started_at: datetime
    last_hit_at: datetime


@dataclass(frozen=True)
class LoginAttempt:
    """What judging a login attempt tells: the user (if any) and, when refused, until when."""

    user: User | None
    password_hash: str | None
    refused_until: datetime | None


@dataclass(frozen=True)
class Backoff:
    """The throttle rule: `limit` attempts per key, then base * 2^(over the limit) seconds, capped;
    a key quiet for `forget_after` starts again."""

    limits: dict[str, int]
    base_seconds: int
    cap_seconds: int
    forget_after: timedelta


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


@dataclass(frozen=True)
class Quota:
    """A fixed-window limit: at most `limit` counted on `key` per `window` (from the window's first count)."""

    key: str
    limit: int
    window: timedelta


# -- SQL --------------------------------------------------------------------------------------
# A fixed-window counter: one hit on `key`, its window started again once older than `window_cutoff`
# (the forgot-password limit per network; the first half of REGISTER_USER).
COUNT_HIT = """
    INSERT INTO public.dashgate_throttle AS t (key, hits, window_started_at, last_hit_at)
    VALUES (%(key)s, 1, %(now)s, %(now)s)
    ON CONFLICT (key) DO UPDATE SET
        hits = CASE WHEN t.window_started_at <= %(window_cutoff)s THEN 1 ELSE t.hits + 1 END,
        window_started_at = CASE WHEN t.window_started_at <= %(window_cutoff)s
                                 THEN %(now)s ELSE t.window_started_at END,
        last_hit_at = %(now)s
    RETURNING hits, window_started_at, last_hit_at
"""
#: The columns of a `User` (store.User), in its order: every statement that answers with a user reads these.
USER_COLUMNS = "id, email, first_name, last_name, created_at, email_confirmed_at IS NOT NULL AS email_confirmed"
# One statement: count the attempt against the IP, then insert unless throttled or taken.
# ON CONFLICT DO NOTHING makes concurrent registrations of one address wait for the first and
# then insert nothing, so exactly one row exists and the others read as "taken".
REGISTER_USER = """
    WITH hit AS (""" + COUNT_HIT + """),
    created AS (
        INSERT INTO public.users (email, password_hash, first_name, last_name, created_at, login_count)
        SELECT %(email)s, %(password_hash)s, %(first_name)s, %(last_name)s, %(now)s, 0
        FROM hit WHERE hit.hits <= %(limit)s
        ON CONFLICT (email) DO NOTHING
        RETURNING """ + USER_COLUMNS + """
    )
    SELECT hit.hits, hit.window_started_at, hit.last_hit_at,
           created.id, created.email, created.first_name, created.last_name, created.created_at,
           created.email_confirmed
    FROM hit LEFT JOIN created ON true
"""  # noqa: S608 - two constants joined, no input in the text

# A login attempt is judged in one transaction, sent as one round trip (pipeline mode):
# ENSURE_COUNTERS makes a row exist for each key, JUDGE_ATTEMPT locks them in key order (the one lock
# order of every statement on counters), finds the keys still in backoff, and counts the attempt on
# every key, or, when any key refuses, on none (SPEC: a refused attempt is counted on no counter).
# Counting before verifying, under the row locks, means parallel guesses cannot slip in below a limit.
# A counter quiet for LOGIN_FAILURE_WINDOW_SECONDS (a day or more) starts again from 0.
ENSURE_COUNTERS = """
    INSERT INTO public.dashgate_throttle (key, hits, window_started_at, last_hit_at)
    SELECT key, 0, %(now)s, %(now)s FROM unnest(%(keys)s::text[]) AS k(key) ORDER BY key
    ON CONFLICT (key) DO NOTHING
"""
JUDGE_ATTEMPT = """
    WITH locked AS (
        SELECT t.key, k.lim, t.last_hit_at,
               CASE WHEN t.last_hit_at <= %(forget_before)s THEN 0 ELSE t.hits END AS hits
        FROM public.dashgate_throttle t
        JOIN unnest(%(keys)s::text[], %(limits)s::int[]) AS k(key, lim) ON k.key = t.key
        ORDER BY t.key
        FOR UPDATE OF t
    ), judged AS (
        SELECT key, hits,
               CASE WHEN hits < lim THEN NULL
                    ELSE last_hit_at + make_interval(secs => least(%(base)s * power(2, least(hits - lim, 30)), %(cap)s))
               END AS retry_at
        FROM locked
    ), counted AS (
        UPDATE public.dashgate_throttle t SET hits = judged.hits + 1, last_hit_at = %(now)s
        FROM judged
        WHERE t.key = judged.key AND NOT EXISTS (SELECT 1 FROM judged WHERE retry_at > %(now)s)
    )
    SELECT max(retry_at) FILTER (WHERE retry_at > %(now)s) FROM judged
"""
# The user whose address this is. Addresses that differ only in letter case may exist in a table an
# older app filled (migration 0004 keeps them): the oldest account answers, always the same one.
FIND_LOGIN_USER = """
    SELECT """ + USER_COLUMNS + """, password_hash
    FROM public.users WHERE lower(email) = %(email)s ORDER BY id LIMIT 1
"""  # noqa: S608 - constants joined, no input in the text
# The same for a signed-in user checking their own password (change password): by id, not address.
FIND_USER_WITH_HASH = """
    SELECT """ + USER_COLUMNS + """, password_hash
    FROM public.users WHERE id = %(user_id)s
"""  # noqa: S608 - constants joined, no input in the text

# A successful login, in one transaction sent as one round trip: the counters first (in key order:
# the counter the attempt was judged on starts again, the network's takes this attempt back), then the
# user and the new session in one statement, then the session the client presented is revoked (never
# adopted). The user is updated only while its password is still the one just verified, and the
# session is created only from that update (the INSERT reads the UPDATE's rows, so it runs after it):
# a reset or change that commits while argon2 runs leaves the login with no session (users row before
# sessions: the lock order of every statement that writes both).
SETTLE_COUNTERS = """
    WITH locked AS (
        SELECT key FROM public.dashgate_throttle WHERE key = ANY(%(keys)s::text[]) ORDER BY key FOR UPDATE
    )
    UPDATE public.dashgate_throttle t
    SET hits = CASE WHEN t.key = ANY(%(reset)s::text[]) THEN 0 ELSE greatest(t.hits - 1, 0) END
    FROM locked WHERE t.key = locked.key
"""
RECORD_LOGIN = """
    WITH recorded AS (
        UPDATE public.users SET
            last_login_at = %(now)s,
            last_login_ip = %(ip)s,
            login_count = coalesce(login_count, 0) + 1,
            password_hash = coalesce(%(new_hash)s, password_hash)
        WHERE id = %(user_id)s AND password_hash IS NOT DISTINCT FROM %(checked_hash)s
        RETURNING id
    )
    INSERT INTO public.dashgate_sessions (id_hash, user_id, remember, created_at, last_seen_at, expires_at)
    SELECT %(id_hash)s, id, %(remember)s, %(now)s, %(now)s, %(expires_at)s FROM recorded
"""
REVOKE_PRESENTED_SESSION = """
    UPDATE public.dashgate_sessions SET revoked_at = %(now)s
    WHERE id_hash = %(presented_hash)s AND revoked_at IS NULL
"""

# Housekeeping (a scheduled function, never the sign-in path): dead sessions and forgotten counters,
# a bounded batch per statement so no statement holds many row locks for long.
PRUNE_SESSIONS = """
    DELETE FROM public.dashgate_sessions WHERE id_hash IN (
        SELECT id_hash FROM public.dashgate_sessions
        WHERE expires_at < %(now)s OR revoked_at IS NOT NULL OR (NOT remember AND last_seen_at < %(idle_before)s)
        LIMIT %(batch)s)
"""
PRUNE_COUNTERS = """
    DELETE FROM public.dashgate_throttle WHERE key IN (
        SELECT key FROM public.dashgate_throttle WHERE last_hit_at < %(quiet_before)s
        ORDER BY key LIMIT %(batch)s FOR UPDATE SKIP LOCKED  -- key order, never waiting on a login
    ) AND last_hit_at < %(quiet_before)s  -- a login may have used it since the subquery looked
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
    SELECT u.id, u.email, u.first_name, u.last_name, u.created_at, u.email_confirmed_at IS NOT NULL AS email_confirmed
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

# -- account recovery (SPEC: "Account recovery and email") ---------------------------------------
# The lock order is the sign-in path's, extended: throttle counters (in key order), then tokens,
# then users, then sessions (a reset revokes the sessions after it has changed the password, so a
# login that verified the old one finds the user changed and creates none: RECORD_LOGIN).
# Tokens are kept only as SHA-256 hashes (like session ids).

FIND_USER = """
    SELECT """ + USER_COLUMNS + """
    FROM public.users WHERE id = %(user_id)s
"""  # noqa: S608 - constants joined, no input in the text
# Who gets a reset link: the account of the address, the oldest as at sign-in (FIND_LOGIN_USER).
FIND_RESET_RECIPIENT = """
    SELECT """ + USER_COLUMNS + """
    FROM public.users WHERE lower(email) = %(email)s ORDER BY id LIMIT 1
"""  # noqa: S608 - constants joined, no input in the text
# Who gets a confirmation link: the user it was asked for, still at that address, still unconfirmed.
FIND_CONFIRM_RECIPIENT = """
    SELECT """ + USER_COLUMNS + """
    FROM public.users WHERE id = %(user_id)s AND lower(email) = %(email)s AND email_confirmed_at IS NULL
"""  # noqa: S608 - constants joined, no input in the text
# The per-address mail limits: lock their counters in key order, and count this mail on every one,
# or, when one is full, on none (as JUDGE_ATTEMPT). True when the mail may go. Needs ENSURE_COUNTERS.
COUNT_MAIL = """
    WITH locked AS (
        SELECT t.key, q.lim,
               CASE WHEN t.window_started_at <= %(now)s - make_interval(secs => q.secs) THEN 0 ELSE t.hits END AS hits
        FROM public.dashgate_throttle t
        JOIN unnest(%(keys)s::text[], %(limits)s::int[], %(windows)s::int[]) AS q(key, lim, secs) ON q.key = t.key
        ORDER BY t.key
        FOR UPDATE OF t
    ), counted AS (
        UPDATE public.dashgate_throttle t
        SET hits = locked.hits + 1, last_hit_at = %(now)s,
            window_started_at = CASE WHEN locked.hits = 0 THEN %(now)s ELSE t.window_started_at END
        FROM locked
        WHERE t.key = locked.key AND NOT EXISTS (SELECT 1 FROM locked WHERE hits >= lim)
    )
    SELECT NOT EXISTS (SELECT 1 FROM locked WHERE hits >= lim)
"""
# "A newer request voids older tokens"; a reset or a password change voids the outstanding reset tokens.
VOID_TOKENS = """
    UPDATE public.dashgate_tokens SET used_at = %(now)s
    WHERE user_id = %(user_id)s AND purpose = %(purpose)s AND used_at IS NULL
"""
INSERT_TOKEN = """
    INSERT INTO public.dashgate_tokens (token_hash, purpose, user_id, email, created_at, expires_at)
    VALUES (%(token_hash)s, %(purpose)s, %(user_id)s, %(email)s, %(now)s, %(expires_at)s)
"""
VOID_TOKEN = """
    UPDATE public.dashgate_tokens SET used_at = %(now)s WHERE token_hash = %(token_hash)s AND used_at IS NULL
"""
# A token works while it is unused, unexpired, and its user still has the address it was sent to.
PEEK_TOKEN = """
    SELECT t.user_id FROM public.dashgate_tokens t JOIN public.users u ON u.id = t.user_id
    WHERE t.token_hash = %(token_hash)s AND t.purpose = %(purpose)s AND t.used_at IS NULL
      AND t.expires_at > %(now)s AND u.email = t.email
"""
# Use a token up, if it works. Of two parallel uses, the second waits for the first's row lock, then
# finds used_at set (PostgreSQL re-checks the WHERE on the updated row): exactly one succeeds.
USE_TOKEN = """
    UPDATE public.dashgate_tokens t SET used_at = %(now)s
    FROM public.users u
    WHERE t.token_hash = %(token_hash)s AND t.purpose = %(purpose)s AND t.used_at IS NULL
      AND t.expires_at > %(now)s AND u.id = t.user_id AND u.email = t.email
    RETURNING t.user_id
"""
# The account's login-failure counter (Users' `login-email:<address>`) of the address a token was
# sent to, cleared first: so it is locked before the token (the lock order); a token that does not
# work rolls the transaction back.
CLEAR_LOGIN_COUNTER = """
    UPDATE public.dashgate_throttle SET hits = 0
    WHERE key = (SELECT 'login-email:' || lower(email) FROM public.dashgate_tokens WHERE token_hash = %(token_hash)s)
"""
REVOKE_USER_SESSIONS = """
    UPDATE public.dashgate_sessions SET revoked_at = %(now)s WHERE user_id = %(user_id)s AND revoked_at IS NULL
"""
# A reset proves the address too (the link was mailed to it): it confirms it (`confirms`).
SET_PASSWORD = """
    UPDATE public.users SET password_hash = %(password_hash)s, password_changed_at = %(now)s,
        email_confirmed_at = CASE WHEN %(confirms)s THEN coalesce(email_confirmed_at, %(now)s)
                                  ELSE email_confirmed_at END
    WHERE id = %(user_id)s
    RETURNING """ + USER_COLUMNS + """
"""  # noqa: S608 - constants joined, no input in the text
# A password change: every live session of the user revoked, and the current one (which must be
# among them, unexpired) replaced by a new session with its `remember` flag.
REPLACE_SESSION = """
    WITH revoked AS (
        UPDATE public.dashgate_sessions SET revoked_at = %(now)s
        WHERE user_id = %(user_id)s AND revoked_at IS NULL
        RETURNING id_hash, remember, expires_at
    )
    INSERT INTO public.dashgate_sessions (id_hash, user_id, remember, created_at, last_seen_at, expires_at)
    SELECT %(id_hash)s, %(user_id)s, remember, %(now)s, %(now)s,
           CASE WHEN remember THEN %(remember_expires_at)s ELSE %(expires_at)s END
    FROM revoked WHERE id_hash = %(current_hash)s AND expires_at > %(now)s
    RETURNING remember
"""
# Confirm an address with a token: the token used up (as USE_TOKEN), then its user marked confirmed.
# The UPDATE reads the CTE's output, so it runs after it (the token row, then the user: lock order).
CONFIRM_EMAIL = """
    WITH used AS (
        UPDATE public.dashgate_tokens t SET used_at = %(now)s
        FROM public.users u
        WHERE t.token_hash = %(token_hash)s AND t.purpose = 'email_confirm' AND t.used_at IS NULL
          AND t.expires_at > %(now)s AND u.id = t.user_id AND u.email = t.email
        RETURNING t.user_id
    )
    UPDATE public.users SET email_confirmed_at = coalesce(email_confirmed_at, %(now)s)
    FROM used WHERE id = used.user_id
    RETURNING """ + USER_COLUMNS + """
"""  # noqa: S608 - constants joined, no input in the text
# Housekeeping: tokens that can no longer be used, a bounded batch per statement.
PRUNE_TOKENS = """
    DELETE FROM public.dashgate_tokens WHERE token_hash IN (
        SELECT token_hash FROM public.dashgate_tokens WHERE expires_at < %(now)s OR used_at IS NOT NULL
        LIMIT %(batch)s)
"""

SET_LOCAL_TIMEOUT = "SELECT set_config('statement_timeout', %(ms)s, true)"

CREATE_MIGRATIONS_TABLE = """
    CREATE TABLE IF NOT EXISTS public.dashgate_schema_migrations (
        version text PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(%(key)s)"
SET_LOCAL_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %(ms)s, true)"
IS_MIGRATION_APPLIED = "SELECT 1 FROM public.dashgate_schema_migrations WHERE version = %(version)s"
RECORD_MIGRATION = "INSERT INTO public.dashgate_schema_migrations (version) VALUES (%(version)s)"


class Store:
    """PostgreSQL access over one lazily opened connection per execution environment, or over a
    pool (`pool_size`) where several threads share the store (the guard in a threaded host)."""

    def __init__(
        self,
        conninfo: Callable[[], str],
        *,
        connect_timeout: int = 3,
        statement_timeout_ms: int = 3000,
        application_name: str = "dashgate",
        behind_proxy: bool = False,
        pool_size: int = 0,
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
        self._pool_size = pool_size
        self._pool: Any = None  # psycopg_pool.ConnectionPool, imported only where a pool is asked for
        self._pool_lock = threading.Lock()
        #: Statements sent to the server, for the round-trip budget (and the tests that hold it).
        self.round_trips = 0
        #: Seconds spent waiting for those statements: `make bench` subtracts it to show our own overhead.
        self.db_seconds = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *, application_name: str = "dashgate",
                      connect_timeout: int | None = None, statement_timeout_ms: int | None = None,
                      pool_size: int = 0) -> Store:
        """A store for DATABASE_URL, or for the RDS-style secret DB_SECRET_ARN (read at first connect)."""
        return cls(
            lambda: database_conninfo(settings),
            connect_timeout=connect_timeout or settings.db_connect_timeout,
            statement_timeout_ms=statement_timeout_ms or settings.db_statement_timeout_ms,
            application_name=application_name,
            behind_proxy=bool(settings.db_host),  # DB_HOST exists to point at an RDS Proxy
            pool_size=pool_size,
        )

    @property
    def round_trip_timeout(self) -> float:
        """The longest one round trip may take before the client gives up on the server."""
        return self._statement_timeout_ms / 1000 + ROUND_TRIP_MARGIN_SECONDS

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

    def claim_login_attempt(self, *, email: str, backoff: Backoff, now: datetime,
                            user_id: int | None = None) -> LoginAttempt:
        """Count an attempt on every key of `backoff`, or on none when one refuses; read the user (the
        one with this address, or, for a signed-in user checking their password, the one with `user_id`)."""
        keys = sorted(backoff.limits)
        params = {"email": email, "keys": keys, "limits": [backoff.limits[k] for k in keys], "now": now,
                  "base": backoff.base_seconds, "cap": backoff.cap_seconds, "forget_before": now - backoff.forget_after,
                  "user_id": user_id}

        def work(conn: psycopg.Connection) -> LoginAttempt:
            with one_round_trip(conn):
                conn.execute(ENSURE_COUNTERS, params)
                judged = conn.execute(JUDGE_ATTEMPT, params)
                found = conn.execute(FIND_LOGIN_USER if user_id is None else FIND_USER_WITH_HASH, params)
            (refused_until,) = judged.fetchone()
            row = found.fetchone()
            return LoginAttempt(User(*row[:6]) if row else None, row[6] if row else None, refused_until)
        # A pipeline cannot tell a connection the server closed while idle from one lost mid-way, so
        # it is checked first (single statements learn it from the server's 57P0x and retry instead).
        # Only here, before the hash: after argon2 has swept the caches a poll costs 20 us, not 0.4.
        # If it was lost anyway (closed just after the check), running the claim again is safe: at
        # worst one attempt is counted twice, which only makes the throttle stricter.
        return self._run(work, check_idle=True, retry_when_lost=True)

    def record_login_success(self, *, user_id: int, ip: str, session: NewSession, presented_hash: bytes | None,
                             checked_hash: str | None, new_hash: str | None, counted: list[str], reset: list[str],
                             now: datetime) -> bool:
        """Settle the attempt's counters, swap the presented session for a new one, record the login:
        one transaction, one round trip. False (no session) when the password is no longer
        `checked_hash`, the one the attempt was verified against (a reset or change came first)."""
        params = {
            "user_id": user_id, "ip": ip, "id_hash": session.id_hash, "remember": session.remember,
            "expires_at": session.expires_at, "presented_hash": presented_hash, "new_hash": new_hash,
            "checked_hash": checked_hash, "keys": sorted(counted), "reset": reset, "now": now,
        }

        def work(conn: psycopg.Connection) -> bool:
            with one_round_trip(conn):
                conn.execute(SETTLE_COUNTERS, params)
                created = conn.execute(RECORD_LOGIN, params)
                if presented_hash is not None:
                    conn.execute(REVOKE_PRESENTED_SESSION, params)
            return created.rowcount == 1
        return self._run(work)  # the claim checked this connection for a goodbye a password hash ago

    def password_hash(self, *, user_id: int) -> str | None:
        """The user's password hash as stored now (None when the user is gone)."""
        row = self._run(lambda conn: conn.execute(FIND_USER_WITH_HASH, {"user_id": user_id}).fetchone())
        return row[6] if row else None

    def prune(self, *, now: datetime, idle: timedelta, counters_quiet_for: timedelta, seconds: float,
              batch: int = 1000) -> tuple[int, int, int]:
        """Delete dead sessions, forgotten counters and spent tokens, batch by batch, for at most about
        `seconds` (the next run goes on where this one stopped); the numbers deleted."""
        params = {"now": now, "idle_before": now - idle, "quiet_before": now - counters_quiet_for, "batch": batch}
        stop_at = time.monotonic() + seconds
        totals = [0, 0, 0]
        for index, statement in enumerate((PRUNE_SESSIONS, PRUNE_COUNTERS, PRUNE_TOKENS)):
            deleted = batch
            while deleted == batch and time.monotonic() < stop_at:
                deleted = self._run(lambda conn, sql=statement: conn.execute(sql, params).rowcount)
                totals[index] += deleted
        return totals[0], totals[1], totals[2]

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

    # -- account recovery -----------------------------------------------------------------------------
    def count_hit(self, *, key: str, window: timedelta, now: datetime) -> Hits:
        """Count one hit on a fixed-window counter (a new window once `window` has passed); its state after."""
        params = {"key": key, "now": now, "window_cutoff": now - window}
        return self._run(lambda conn: Hits(*conn.execute(COUNT_HIT, params).fetchone()))

    def settle_counters(self, *, counted: list[str], reset: list[str], now: datetime) -> None:
        """Settle an attempt's counters as a success, without a session (as record_login_success does)."""
        params = {"keys": sorted(counted), "reset": reset, "now": now}
        self._run(lambda conn: conn.execute(SETTLE_COUNTERS, params))

    def find_user(self, *, user_id: int) -> User | None:
        """The user with this id, if any."""
        def work(conn: psycopg.Connection) -> User | None:
            with conn.cursor(row_factory=class_row(User)) as cur:
                return cur.execute(FIND_USER, {"user_id": user_id}).fetchone()
        return self._run(work)

    def issue_token(self, *, purpose: str, email: str, user_id: int | None, token_hash: bytes,
                    expires_at: datetime, quotas: list[Quota], now: datetime) -> User | None:
        """In one transaction: find the recipient (a reset: the account of `email`; a confirmation: user
        `user_id`, still at `email` and unconfirmed), count the mail on `quotas` (on all or on none), void
        the user's older tokens of `purpose` and store the new one. The recipient, or None: nothing to send."""
        ordered = sorted(quotas, key=lambda q: q.key)
        params = {"purpose": purpose, "email": email, "user_id": user_id, "token_hash": token_hash,
                  "expires_at": expires_at, "now": now, "keys": [q.key for q in ordered],
                  "limits": [q.limit for q in ordered], "windows": [int(q.window.total_seconds()) for q in ordered]}
        find = FIND_RESET_RECIPIENT if purpose == "password_reset" else FIND_CONFIRM_RECIPIENT

        def work(conn: psycopg.Connection) -> User | None:
            with one_round_trip(conn):
                user = conn.cursor(row_factory=class_row(User)).execute(find, params).fetchone()
                if user is None:
                    return None  # no counter is written for an address without an account
                conn.execute(ENSURE_COUNTERS, params)
                (allowed,) = conn.execute(COUNT_MAIL, params).fetchone()
                if not allowed:
                    return None
                conn.execute(VOID_TOKENS, {**params, "user_id": user.id})
                conn.execute(INSERT_TOKEN, {**params, "user_id": user.id, "email": user.email})
            return user
        return self._run(work)

    def withdraw_token(self, *, token_hash: bytes, keys: list[str], now: datetime) -> None:
        """Take an issued token back (its mail was not sent): void it, give its count back to `keys`."""
        params = {"token_hash": token_hash, "keys": sorted(keys), "reset": [], "now": now}

        def work(conn: psycopg.Connection) -> None:
            with one_round_trip(conn):
                conn.execute(SETTLE_COUNTERS, params)  # counters first: the lock order
                conn.execute(VOID_TOKEN, params)
        self._run(work)

    def token_valid(self, *, token_hash: bytes, purpose: str, now: datetime) -> bool:
        """True when the token works (unused, unexpired, its user still at its address); changes nothing."""
        params = {"token_hash": token_hash, "purpose": purpose, "now": now}
        return self._run(lambda conn: conn.execute(PEEK_TOKEN, params).fetchone() is not None)

    def reset_password(self, *, token_hash: bytes, password_hash: str, now: datetime) -> User | None:
        """Use a reset token up and, in the same transaction, set the password (and confirm the address),
        void the user's other reset tokens, revoke all their sessions and clear the account's login
        failures. The user, or None when the token does not work (used, expired, unknown, moved)."""
        params = {"token_hash": token_hash, "password_hash": password_hash, "purpose": "password_reset",
                  "confirms": True, "now": now}

        def work(conn: psycopg.Connection) -> User:
            with one_round_trip(conn):
                conn.execute(CLEAR_LOGIN_COUNTER, params)
                used = conn.execute(USE_TOKEN, params).fetchone()
                if used is None:
                    raise _TokenUnusable()  # rolls the counter back
                mine = {**params, "user_id": used[0]}
                conn.execute(VOID_TOKENS, mine)
                changed = conn.cursor(row_factory=class_row(User)).execute(SET_PASSWORD, mine)
                conn.execute(REVOKE_USER_SESSIONS, mine)  # after the user's row: a login cannot slip in
            return changed.fetchone()
        try:
            return self._run(work)
        except _TokenUnusable:
            return None

    def change_password(self, *, user_id: int, password_hash: str, current_hash: bytes, new_hash: bytes,
                        expires_at: datetime, remember_expires_at: datetime, counted: list[str], reset: list[str],
                        now: datetime) -> bool:
        """In one transaction: settle the password check's counters as a success, void the user's reset
        tokens, revoke every session of the user and replace the current one (`current_hash`) by a new
        one (`new_hash`, expiring at `expires_at`, or `remember_expires_at` when the current one was
        remembered), set the password. Its `remember` flag; NotSignedIn when the current session is gone."""
        params = {"user_id": user_id, "password_hash": password_hash, "current_hash": current_hash,
                  "id_hash": new_hash, "expires_at": expires_at, "remember_expires_at": remember_expires_at,
                  "keys": sorted(counted), "reset": reset, "purpose": "password_reset", "confirms": False, "now": now}

        def work(conn: psycopg.Connection) -> bool:
            with one_round_trip(conn):
                conn.execute(SETTLE_COUNTERS, params)
                conn.execute(VOID_TOKENS, params)
                conn.execute(SET_PASSWORD, params)  # the user's row before its sessions: the lock order
                replaced = conn.execute(REPLACE_SESSION, params).fetchone()
                if replaced is None:
                    raise NotSignedIn()  # signed out meanwhile: all of it is rolled back
            return replaced[0]
        return self._run(work)

    def confirm_email(self, *, token_hash: bytes, now: datetime) -> User | None:
        """Use a confirmation token up and mark its user's address confirmed; None when it does not work."""
        def work(conn: psycopg.Connection) -> User | None:
            with conn.cursor(row_factory=class_row(User)) as cur:
                return cur.execute(CONFIRM_EMAIL, {"token_hash": token_hash, "now": now}).fetchone()
        return self._run(work)

    def migrate(self, *, deadline: float | None = None) -> list[str]:
        """Apply pending migrations; return the versions applied now (see `migrate`)."""
        return self._run(lambda conn: migrate(conn, deadline=deadline))

    def close(self) -> None:
        """Close the connection, or the pool (SnapStart hooks, tests, the local server's shutdown)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def reset(self) -> None:
        """Close the connection and forget the credentials read from DB_SECRET_ARN (after a SnapStart restore)."""
        self.close()
        self._conninfo = None

    @property
    def backend_pid(self) -> int | None:
        """The server process of the open connection, if any."""
        return self._connection.info.backend_pid if self._connection and not self._connection.closed else None

    # -- connection -----------------------------------------------------------------------------
    def _run(self, work: Callable[[psycopg.Connection], T], *, check_idle: bool = False,
             retry_when_lost: bool = False) -> T:
        """Run `work` on a connection: once more after the server certainly dropped it, and up to
        ROLLED_BACK_ATTEMPTS times when the server rolled it back (deadlock, serialization)."""
        attempt = 0
        while True:
            attempt += 1
            conn = self._acquire(check_idle=check_idle)
            started = time.perf_counter()
            try:
                self.round_trips += 1
                return work(conn)
            except psycopg.OperationalError as exc:
                if _worth_another_attempt(exc, conn, attempt, retry_when_lost):
                    continue
                raise ServiceUnavailable() from exc
            except (psycopg.InterfaceError, psycopg.DatabaseError) as exc:
                raise ServiceUnavailable() from exc
            finally:
                self.db_seconds += time.perf_counter() - started
                self._release(conn)

    def _acquire(self, *, check_idle: bool) -> psycopg.Connection:
        if self._pool_size:
            try:
                return self._open_pool().getconn(timeout=self._connect_timeout + 1)
            except Exception as exc:  # PoolTimeout, or the secret could not be read: a 503
                raise ServiceUnavailable() from exc
        return self._connect(check_idle=check_idle)

    def _release(self, conn: psycopg.Connection) -> None:
        if self._pool is not None:
            self._pool.putconn(conn)  # the pool discards a broken connection itself
        elif conn.broken or conn.closed:
            self.close()

    def _open_pool(self) -> Any:
        with self._pool_lock:  # the first requests of a threaded host arrive together
            if self._pool is None:
                self._pool = self._new_pool()
        return self._pool

    def _new_pool(self) -> Any:
        from psycopg_pool import ConnectionPool

        return ConnectionPool(
            self._conninfo_source, min_size=1, max_size=self._pool_size, open=True,
            connection_class=BoundedConnection, kwargs=self._connect_kwargs(), configure=self._configure,
            check=ConnectionPool.check_connection, name=self._application_name,
        )

    def _connect(self, *, check_idle: bool = False) -> psycopg.Connection:
        conn = self._connection
        if conn is not None and not conn.closed and not conn.broken and not (check_idle and _spoke_while_idle(conn)):
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
        conn = BoundedConnection.connect(conninfo, **self._connect_kwargs())
        self._configure(conn)
        return conn

    def _connect_kwargs(self) -> dict[str, Any]:
        # Timestamps in UTC whatever the server's default (adopted tables use timestamp without
        # time zone); behind RDS Proxy no startup options at all (they pin the connection).
        options = {} if self._behind_proxy else {
            "options": f"-c statement_timeout={self._statement_timeout_ms} -c timezone=UTC"}
        return {
            "autocommit": True, "connect_timeout": self._connect_timeout,
            "application_name": self._application_name,
            "prepare_threshold": None if self._behind_proxy else 5,
            # Unacknowledged data for longer than a round trip may take: the kernel drops the connection.
            "tcp_user_timeout": int(self.round_trip_timeout * 1000), **KEEPALIVES, **options,
        }

    def _configure(self, conn: BoundedConnection) -> None:
        conn.round_trip_timeout = self.round_trip_timeout
        conn.idle_poller = select.poll()  # not select(): it fails on descriptors above 1023
        conn.idle_poller.register(conn.fileno(), select.POLLIN)


class _TokenUnusable(Exception):
    """A token did not work: its transaction is rolled back (Store.reset_password)."""


@contextlib.contextmanager
def one_round_trip(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction whose statements travel together: BEGIN, them and COMMIT in one pipeline, so
    one network round trip (psycopg's `transaction()` would sync on entering and leaving, costing
    four more here). On any failure the transaction is rolled back, so the work can run again."""
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            yield
            conn.execute("COMMIT")
    except psycopg.OperationalError as exc:
        if exc.sqlstate in RETRYABLE_SQLSTATES:
            # The server went away while the pipeline ran: the COMMIT may have run before it did,
            # so this transaction is not "certainly not run" and must not be run again.
            raise psycopg.OperationalError(f"connection lost during a transaction: {exc}") from exc
        _roll_back(conn)
        raise
    except BaseException:
        _roll_back(conn)
        raise


def _roll_back(conn: psycopg.Connection) -> None:
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with contextlib.suppress(psycopg.Error):  # the first error is the one to report
            conn.execute("ROLLBACK")


def _worth_another_attempt(exc: psycopg.OperationalError, conn: psycopg.Connection, attempt: int,
                           retry_when_lost: bool) -> bool:
    """True when running the work again is safe and may succeed."""
    if exc.sqlstate in ROLLED_BACK_SQLSTATES:
        return attempt < ROLLED_BACK_ATTEMPTS
    if isinstance(exc, ServerSilent) or isinstance(exc.__cause__, ServerSilent):
        return False
    return attempt == 1 and conn.broken and (retry_when_lost or _safe_to_retry(exc))


def _spoke_while_idle(conn: BoundedConnection) -> bool:
    """True when an idle connection has input waiting: nothing but the server's goodbye (a FATAL
    57P01 on termination, 57P05 on idle_session_timeout, or EOF) arrives unasked, so it is dead.
    Checking costs one poll of the socket, no round trip; a pipeline could not tell otherwise."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    return bool(conn.idle_poller.poll(0))


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


class MigrationTimeout(Exception):
    """The migrations could not finish before their deadline (a lock held too long, most likely)."""


def migrate(conn: psycopg.Connection, *, lock_timeout_ms: int = MIGRATION_LOCK_TIMEOUT_MS,
            attempts: int = MIGRATION_ATTEMPTS, pause: float = 1.0, deadline: float | None = None) -> list[str]:
    """Apply the SQL files in migrations/ in order, once each: one transaction per file, under an
    advisory lock, never waiting more than `lock_timeout_ms` for a table lock (then retried), and
    never running past `deadline` (monotonic seconds): then MigrationTimeout, with what is done kept."""
    usual_bound = getattr(conn, "round_trip_timeout", None)
    try:
        return _migrate(conn, lock_timeout_ms, attempts, pause, deadline)
    finally:
        if isinstance(conn, BoundedConnection):
            conn.round_trip_timeout = usual_bound


def _migrate(conn: psycopg.Connection, lock_timeout_ms: int, attempts: int, pause: float,
             deadline: float | None) -> list[str]:
    with conn.transaction():  # under the lock: two first runs would race to create it
        _bound_waits(conn, lock_timeout_ms, _milliseconds_left(deadline, "the migrations table"))
        conn.execute(LOCK_MIGRATIONS, {"key": MIGRATION_LOCK_KEY})
        conn.execute(CREATE_MIGRATIONS_TABLE)
    applied_now = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        for attempt in range(1, attempts + 1):
            statement_ms = _milliseconds_left(deadline, path.stem)
            try:
                if _apply_migration(conn, path, min(lock_timeout_ms, statement_ms), statement_ms):
                    applied_now.append(path.stem)
                break
            except psycopg.errors.LockNotAvailable as exc:
                # A live transaction holds the table: waiting longer would queue the dashboard's own
                # queries behind our lock request. Let them through, then ask again.
                if attempt == attempts:
                    raise MigrationTimeout(f"{path.stem}: a table stayed locked ({attempts} tries)") from exc
                time.sleep(min(pause * attempt, max(0.0, (deadline or float("inf")) - time.monotonic() - 1)))
    return applied_now


def _milliseconds_left(deadline: float | None, step: str) -> int:
    """The statement timeout for the next try: the usual one, or what is left before the deadline."""
    if deadline is None:
        return MIGRATION_STATEMENT_TIMEOUT_MS
    left = int((deadline - time.monotonic()) * 1000)
    if left < 1000:
        raise MigrationTimeout(f"no time left before {step}")
    return min(MIGRATION_STATEMENT_TIMEOUT_MS, left)


def _bound_waits(conn: psycopg.Connection, lock_timeout_ms: int, statement_ms: int) -> None:
    """Every wait of this transaction, the advisory lock's included, within the time allowed: on the
    server (lock and statement timeouts) and in the client (a server that stops answering)."""
    conn.execute(SET_LOCAL_LOCK_TIMEOUT, {"ms": str(min(lock_timeout_ms, statement_ms))})
    conn.execute(SET_LOCAL_TIMEOUT, {"ms": str(statement_ms)})
    if isinstance(conn, BoundedConnection):
        conn.round_trip_timeout = statement_ms / 1000 + ROUND_TRIP_MARGIN_SECONDS


def _apply_migration(conn: psycopg.Connection, path: Path, lock_timeout_ms: int, statement_ms: int) -> bool:
    """Run one migration file in its own transaction unless it was applied; True when run now."""
    with conn.transaction():
        _bound_waits(conn, lock_timeout_ms, statement_ms)
        conn.execute(LOCK_MIGRATIONS, {"key": MIGRATION_LOCK_KEY})
        if conn.execute(IS_MIGRATION_APPLIED, {"version": path.stem}).fetchone():
            return False
        conn.execute(path.read_text())
        conn.execute(RECORD_MIGRATION, {"version": path.stem})
    return True
