"""Warm requests in-process: real payload 2.0 events through the real handlers against a real PostgreSQL."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

from bench.fixtures import (
    CONTEXT,
    PASSWORD,
    Account,
    authorize,
    login_form,
    mint_sessions,
    outcome,
    post_json,
    sign_up,
    sqs_batch,
    unique_email,
)
from bench.stats import interleave, median, ms, summary
from tests.support import load_handler, make_event

#: Requests discarded before timing: the first ones pay for lazy imports and the connection.
WARMUP = 20
#: A wrong password of the same length class as PASSWORD (argon2's cost does not depend on it).
WRONG = "not the password at all"


def load(name: str, **overrides: str) -> ModuleType:
    """Import a handler afresh, as a new execution environment would, under extra settings."""
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        return load_handler(name)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Sample(NamedTuple):
    """One timed request, in milliseconds, and its status (0 for a bare call)."""

    total: float
    db: float
    hashing: float
    status: int | str
    #: Putting mail on the queue (a file here, one SQS call in AWS): I/O to another service, like the database.
    queue: float = 0.0

    @property
    def ours(self) -> float:
        """Time that is neither PostgreSQL's, argon2's nor the mail queue's: what this code costs."""
        return self.total - self.db - self.hashing - self.queue


class Timed:
    """Stands in for an object (a function's argon2 PasswordHasher, its mail queue) and adds up the
    time spent inside the named methods."""

    def __init__(self, inner: Any, methods: tuple[str, ...]) -> None:
        self._inner, self._methods = inner, methods
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._methods:
            return attribute

        def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
        return timed_call


def time_hashing(module: ModuleType) -> None:
    """Let `invoke` see how long a request spent in argon2 and on the mail queue (register and login)."""
    runtime = module.runtime
    if runtime.passwords is not None and not isinstance(runtime.passwords.hasher, Timed):
        runtime.passwords.hasher = Timed(runtime.passwords.hasher, ("hash", "verify"))
    if runtime.mail_queue is not None and not isinstance(runtime.mail_queue, Timed):
        runtime.mail_queue = Timed(runtime.mail_queue, ("send",))


def _seconds(timed: Any) -> float:
    return timed.seconds if isinstance(timed, Timed) else 0.0


def invoke(module: ModuleType, event: dict[str, Any]) -> Sample:
    """One request: total milliseconds, and the milliseconds of it spent in PostgreSQL, in argon2 and on
    the mail queue."""
    runtime = module.runtime
    hasher = runtime.passwords.hasher if runtime.passwords is not None else None
    db_before, hash_before, queue_before = (runtime.store.db_seconds, _seconds(hasher),
                                            _seconds(runtime.mail_queue))
    started = time.perf_counter_ns()
    response = module.lambda_handler(event, CONTEXT)
    total = ms(time.perf_counter_ns() - started)
    return Sample(total, (runtime.store.db_seconds - db_before) * 1000, (_seconds(hasher) - hash_before) * 1000,
                  outcome(response), (_seconds(runtime.mail_queue) - queue_before) * 1000)


def timed(work: Callable[..., Any], *args: Any) -> Sample:
    """A bare call timed like a request (no database, no status)."""
    started = time.perf_counter_ns()
    work(*args)
    return Sample(ms(time.perf_counter_ns() - started), 0.0, 0.0, 0)


def get_routes(handlers: dict[str, ModuleType], account: Account, n: int) -> dict[str, Callable[[], Any]]:
    """Each GET the functions answer, ready to time `n` times (a fresh session for each logout)."""
    login = handlers["login"]
    signed_in = mint_sessions(login.runtime, account.user_id, 1)
    to_log_out = mint_sessions(handlers["logout"].runtime, account.user_id, n)
    same_site = {"sec-fetch-site": "same-origin"}
    events = {
        "GET /register/": (handlers["register"], make_event("GET", "/register/")),
        "GET /login/ signed out": (login, make_event("GET", "/login/")),
        "GET /login/ signed in": (login, make_event("GET", "/login/", cookies=signed_in)),
        "GET /healthcheck/": (handlers["health"], make_event("GET", "/healthcheck/")),
        "GET /password/forgot/": (handlers["forgot"], make_event("GET", "/password/forgot/")),
        "GET /healthcheck/ JSON": (handlers["health"],
                                   make_event("GET", "/healthcheck/", headers={"accept": "application/json"})),
    }
    if "authorizer" in handlers:  # every /dash request the gateway has not cached an answer for
        events["authorize /dash/ signed in"] = (handlers["authorizer"], authorize(signed_in))
        events["authorize /dash/ no session"] = (handlers["authorizer"], authorize(["__Host-csrf=abc"]))
    routes = {label: (lambda m=m, e=e: invoke(m, e)) for label, (m, e) in events.items()}
    logout_events = iter([make_event("GET", "/logout/", headers=same_site, cookies=[c]) for c in to_log_out])
    routes["GET /logout/"] = lambda: invoke(handlers["logout"], next(logout_events))
    return routes


def measure_gets(handlers: dict[str, ModuleType], account: Account, n: int) -> dict[str, dict[str, Any]]:
    """p50/p99 of every GET and of its time beyond the database's own, round-robin over the routes."""
    routes = get_routes(handlers, account, n + WARMUP)
    gc.collect()
    samples = interleave(routes, n + WARMUP)
    return {label: describe(values[WARMUP:]) for label, values in samples.items()}


def describe(values: list[Sample]) -> dict[str, Any]:
    """Total time, the database's and argon2's shares, and the rest (ours), with the statuses seen."""
    return {**summary([v.total for v in values]),
            "db_p50": round(median([v.db for v in values]), 3),
            "argon2_p50": round(median([v.hashing for v in values]), 3),
            "queue_p50": round(median([v.queue for v in values]), 3),
            "overhead": summary([v.ours for v in values]),
            "statuses": sorted({v.status for v in values})}


def post_items(handlers: dict[str, ModuleType], account: Account, n: int) -> dict[str, Callable[[], Sample]]:
    """The POSTs, the bare argon2 calls with the same parameters, and the two failing logins."""
    login, register, logout = handlers["login"], handlers["register"], handlers["logout"]
    bare = login.runtime.passwords.hasher  # before time_hashing wraps it: these calls are the bare ones
    stored = bare.hash(PASSWORD)
    time_hashing(login)
    time_hashing(register)
    cookies = iter(mint_sessions(logout.runtime, account.user_id, n))
    email = account.email

    def attempt(address: str, password: str) -> Sample:
        return invoke(login, post_json("/login/", {"email": address, "password": password}))

    return {
        "POST /login/ JSON": lambda: attempt(email, PASSWORD),
        "POST /login/ form": lambda: invoke(login, login_form(login.runtime, email, PASSWORD)),
        "POST /register/ JSON": lambda: invoke(register, sign_up({"email": unique_email("post")})),
        "POST /logout/ JSON": lambda: invoke(logout, post_json("/logout/", {}, cookies=[next(cookies)])),
        "POST /login/ wrong password": lambda: attempt(email, WRONG),
        "POST /login/ unknown email": lambda: attempt(unique_email("unknown"), WRONG),
        "argon2 verify (bare)": lambda: timed(bare.verify, stored, PASSWORD),
        "argon2 hash (bare)": lambda: timed(bare.hash, PASSWORD),
    }


def measure_posts(handlers: dict[str, ModuleType], account: Account, n: int) -> dict[str, Any]:
    """POST latencies interleaved with bare argon2, so the non-hash overhead is visible; timing parity."""
    gc.collect()
    raw = interleave(post_items(handlers, account, n + 2), n + 2)
    samples = {label: values[2:] for label, values in raw.items()}  # the first of each pays one-off costs
    verify = median([v.total for v in samples["argon2 verify (bare)"]])
    hashing = median([v.total for v in samples["argon2 hash (bare)"]])
    overhead = {label: non_hash(samples[label], hashing if "register" in label else verify)
                for label in ("POST /login/ JSON", "POST /login/ form", "POST /register/ JSON")}
    unknown, wrong = (median([v.total for v in samples[f"POST /login/ {kind}"]])
                      for kind in ("unknown email", "wrong password"))
    return {"routes": {label: describe(values) for label, values in samples.items() if label.startswith("POST")},
            "argon2_verify_ms": round(verify, 3), "argon2_hash_ms": round(hashing, 3),
            "non_hash_overhead_ms": overhead,
            "parity": {"unknown_email_ms": round(unknown, 3), "wrong_password_ms": round(wrong, 3),
                       "ratio": round(unknown / wrong, 4), "pairs": len(samples["POST /login/ unknown email"])}}


def non_hash(values: list[Sample], bare_ms: float) -> dict[str, float]:
    """What a POST costs beyond its argon2 call: exactly (per request), against the bare call, and with the DB."""
    return {"ours": round(median([v.ours for v in values]), 3),
            "ours_vs_bare": round(median([v.total - v.db - v.queue for v in values]) - bare_ms, 3),
            "with_db": round(median([v.total - v.hashing for v in values]), 3),
            "queue": round(median([v.queue for v in values]), 3)}


def count_round_trips(handlers: dict[str, ModuleType], account: Account) -> dict[str, dict[str, Any]]:
    """Statements each operation sends (Store.round_trips), with the status that proves the path taken."""
    login, email = handlers["login"], account.email
    throttled, guessed = load("login", LOGIN_MAX_FAILURES_PER_EMAIL="2"), unique_email("guessed")
    for _ in range(2):  # two failures for an address, under a limit of two: the next attempt is refused
        throttled.lambda_handler(post_json("/login/", {"email": guessed, "password": WRONG}), CONTEXT)
    signed_in = mint_sessions(login.runtime, account.user_id, 2)
    operations = {
        "register": (handlers["register"], sign_up({"email": unique_email("trips")})),
        "login success": (login, post_json("/login/", {"email": email, "password": PASSWORD})),
        "login failure": (login, post_json("/login/", {"email": email, "password": WRONG})),
        "login refused (throttled)": (throttled, post_json("/login/", {"email": guessed, "password": WRONG})),
        "logout": (handlers["logout"], post_json("/logout/", {}, cookies=signed_in[:1])),
        "health": (handlers["health"], make_event("GET", "/healthcheck/")),
        "signed-in check (GET /login/)": (login, make_event("GET", "/login/", cookies=signed_in[1:])),
    }
    if "authorizer" in handlers:
        operations["authorizer (signed in)"] = (handlers["authorizer"], authorize(signed_in[1:]))
    operations |= {
        "forgot password": (handlers["forgot"], post_json("/password/forgot/", {"email": email})),
        "reset password (a used link)": (handlers["reset"], post_json("/password/reset/", {
            "token": "used-" * 8, "password": PASSWORD})),
        "confirm email (a used link)": (handlers["confirm"], post_json("/email/confirm/", {"token": "used-" * 8})),
        "mailer (reset mail for an unknown address)": (handlers["mailer"], sqs_batch(unique_email("trips"))),
    }
    counts = {}
    for label, (module, event) in operations.items():
        before = module.runtime.store.round_trips
        status = outcome(module.lambda_handler(event, CONTEXT))
        counts[label] = {"round_trips": module.runtime.store.round_trips - before, "status": status}
    throttled.runtime.store.close()
    return counts
