"""`make bench` counts round trips with the real handlers: run that part here, so the benchmark
cannot silently drift from the code it measures (and the counts it reports are checked)."""

from __future__ import annotations

from bench.fixtures import Account, register, unique_email
from bench.warm import count_round_trips


def test_the_benchmark_counts_the_round_trip_budget(handlers: dict, load, db) -> None:
    every = {**handlers, **{name: load(name) for name in ("authorizer", "forgot", "reset", "confirm", "mailer")}}
    email = unique_email("test")
    account = Account(email, register(every["register"], email))

    counts = count_round_trips(every, account)

    assert {label: c["round_trips"] for label, c in counts.items()} == {
        "register": 1, "login success": 2, "login failure": 1, "login refused (throttled)": 1, "logout": 1,
        "health": 1, "signed-in check (GET /login/)": 1, "authorizer (signed in)": 1,
        "forgot password": 1, "reset password (a used link)": 1, "confirm email (a used link)": 1,
        "mailer (reset mail for an unknown address)": 1}
    assert counts["login refused (throttled)"]["status"] == 429 and counts["login success"]["status"] == 200
    assert counts["forgot password"]["status"] == 202 and counts["reset password (a used link)"]["status"] == 400
    assert counts["mailer (reset mail for an unknown address)"]["status"] == "0 failed"
