"""The bench's budgets: imports held in instructions, wall-clock figures at the reference machine's speed."""

from __future__ import annotations

from bench import report


def results(*, rate: float | None, m_instructions: float | None, import_ms: float, get_ms: float,
            post_ms: float) -> dict:
    """The parts of a bench result that `report.budgets` reads, for one function and one route each."""
    function = {"import_ms": import_ms, "peak_rss_mb": 50.0}
    if m_instructions is not None:
        function["import_m_instructions"] = m_instructions
    cold = {"functions": {"login": function}, **({"ms_per_m_instructions": rate} if rate else {})}
    return {"cold": cold,
            "warm": {"gets": {"GET /login/": {"overhead": {"p50": get_ms}}},
                     "posts": {"non_hash_overhead_ms": {"POST /login/ JSON": {"ours": post_ms}},
                               "parity": {"ratio": 1.0}}},
            "round_trips": {label: {"round_trips": 1} for label in report.ROUND_TRIP_BUDGETS}}


def met(rows: list[dict], prefix: str) -> bool:
    return next(r for r in rows if r["budget"].startswith(prefix))["met"]


def test_the_import_budget_is_held_in_instructions_whatever_the_machine() -> None:
    # GIVEN a machine half as fast as the reference: 1,200 M instructions took 570 ms here
    rows = report.budgets(results(rate=0.475, m_instructions=1200, import_ms=570, get_ms=0.1, post_ms=0.1))
    # THEN the import is within budget (1,200 M = 285 ms at the reference rate), whatever the clock said
    assert met(rows, "import beyond bare python: login")
    # AND 1,300 M is not, on any machine
    rows = report.budgets(results(rate=0.2, m_instructions=1300, import_ms=260, get_ms=0.1, post_ms=0.1))
    assert not met(rows, "import beyond bare python: login")


def test_wall_clock_budgets_are_scaled_by_how_much_slower_this_machine_ran_the_imports() -> None:
    # GIVEN a machine that ran the imports 1.5 times slower than the reference
    slow = results(rate=report.REFERENCE_MS_PER_M_INSTRUCTIONS * 1.5, m_instructions=1200, import_ms=427,
                   get_ms=0.4, post_ms=1.4)
    rows = report.budgets(slow)
    # THEN a GET of 0.4 ms and a POST of 1.4 ms meet 0.3 x 1.5 and 1.0 x 1.5
    assert met(rows, "GET /login/") and met(rows, "POST /login/ JSON")
    # AND on a machine as fast as the reference, or faster, they are held to the budgets themselves
    for rate in (report.REFERENCE_MS_PER_M_INSTRUCTIONS, 0.1):
        rows = report.budgets(results(rate=rate, m_instructions=1200, import_ms=200, get_ms=0.4, post_ms=1.4))
        assert not met(rows, "GET /login/") and not met(rows, "POST /login/ JSON")


def test_without_callgrind_the_import_budget_is_the_milliseconds_measured() -> None:
    rows = report.budgets(results(rate=None, m_instructions=None, import_ms=310, get_ms=0.2, post_ms=0.9))
    assert not met(rows, "import beyond bare python: login")
    assert met(rows, "GET /login/") and met(rows, "POST /login/ JSON")
