"""The report: each budget (issues 6 and 12) as met or not, a table for people, the same figures as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.fixtures import FIRST_REQUEST

#: Import beyond a bare interpreter (half of the Flask app's 610 ms), and the aim.
IMPORT_BUDGET_MS, IMPORT_AIM_MS = 300.0, 200.0
#: Milliseconds per million instructions of the machine the budgets were set and first met on (2 vCPU
#: x86_64, runs of 2026-11-27 to 2026-12-01: ten imports timed at 02b6a95 and 87fa01d fit it within 5 %).
#: Machines of the same kind have since run the same imports 1.4 to 1.6 times slower; a wall-clock budget
#: is held at that machine's speed: instructions converted at this rate, milliseconds scaled by the
#: measured machine's rate over it (`machine_factor`).
REFERENCE_MS_PER_M_INSTRUCTIONS = 0.2372
#: The import budget as instructions: 300 ms at the reference rate (1,265 M).
IMPORT_BUDGET_M_INSTRUCTIONS = round(IMPORT_BUDGET_MS / REFERENCE_MS_PER_M_INSTRUCTIONS)
#: A warm GET's time beyond the database's own, at the median.
GET_BUDGET_MS = 0.3
#: A POST login or register beyond its one argon2 call (and the database's time).
POST_BUDGET_MS = 1.0
#: Peak RSS after warm requests (issue 12 raised it from 60 MB for the resolver and pydantic).
PEAK_RSS_BUDGET_MB = 70.0
#: Unknown-email and wrong-password logins within this fraction of each other.
PARITY_BUDGET = 0.10
#: Round trips per operation: (comparison, limit).
ROUND_TRIP_BUDGETS = {"register": ("=", 1), "login success": ("<=", 2), "login failure": ("<=", 2),
                      "logout": ("=", 1), "health": ("=", 1)}


def budgets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every budget with its measured value and whether it is met."""
    rows = []
    factor = machine_factor(results["cold"])
    for name, cold in results["cold"]["functions"].items():
        rows.append(_import_row(name, cold.get("import_m_instructions"), cold["import_ms"]))
        if "import_sqs_ms" in cold:
            rows.append(_import_row(f"{name} with MAIL_QUEUE_URL (SQS)", cold.get("import_sqs_m_instructions"),
                                    cold["import_sqs_ms"]))
        rows.append(_row(f"peak RSS after warm requests: {name}", f"<= {PEAK_RSS_BUDGET_MB:.0f} MB",
                         cold["peak_rss_mb"], "MB", cold["peak_rss_mb"] <= PEAK_RSS_BUDGET_MB))
    for label, route in results["warm"]["gets"].items():
        ours = route["overhead"]["p50"]
        rows.append(_row(f"{label}: p50 beyond the database", _scaled(GET_BUDGET_MS, factor), ours, "ms",
                         ours <= GET_BUDGET_MS * factor))
    for label, overhead in results["warm"]["posts"]["non_hash_overhead_ms"].items():
        value = overhead["ours"]
        rows.append(_row(f"{label}: beyond argon2 and the database", _scaled(POST_BUDGET_MS, factor), value, "ms",
                         value <= POST_BUDGET_MS * factor))
    for label, (op, limit) in ROUND_TRIP_BUDGETS.items():
        count = results["round_trips"][label]["round_trips"]
        rows.append(_row(f"round trips: {label}", f"{op} {limit}", count, "", count == limit if op == "=" else
                         count <= limit))
    ratio = results["warm"]["posts"]["parity"]["ratio"]
    rows.append(_row("unknown email / wrong password", f"within {PARITY_BUDGET:.0%}", ratio, "",
                     abs(ratio - 1) <= PARITY_BUDGET))
    return rows


def machine_factor(cold: dict[str, Any]) -> float:
    """How much slower than the reference machine this one ran the imports (1.0 when not counted, or faster)."""
    rate = cold.get("ms_per_m_instructions")
    return max(1.0, round(rate / REFERENCE_MS_PER_M_INSTRUCTIONS, 2)) if rate else 1.0


def _import_row(name: str, m_instructions: float | None, wall_ms: float) -> dict[str, Any]:
    """The import budget in instructions when callgrind counted them, else in milliseconds here."""
    if m_instructions is None:
        return _row(f"import beyond bare python: {name}", f"<= {IMPORT_BUDGET_MS:.0f} ms (aim {IMPORT_AIM_MS:.0f})",
                    wall_ms, "ms", wall_ms <= IMPORT_BUDGET_MS)
    as_ms = round(m_instructions * REFERENCE_MS_PER_M_INSTRUCTIONS)
    return _row(f"import beyond bare python: {name}",
                f"<= {IMPORT_BUDGET_M_INSTRUCTIONS:,} M instructions ({IMPORT_BUDGET_MS:.0f} ms at the reference)",
                f"{m_instructions:,.0f} M = {as_ms} ms", "", m_instructions <= IMPORT_BUDGET_M_INSTRUCTIONS)


def _scaled(budget_ms: float, factor: float) -> str:
    return f"<= {budget_ms} ms" if factor == 1.0 else f"<= {budget_ms} ms x {factor} = {budget_ms * factor:.2f} ms"


def _row(name: str, target: str, value: float | str, unit: str, met: bool) -> dict[str, Any]:
    return {"budget": name, "target": target, "measured": value, "unit": unit, "met": bool(met)}


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """Left-aligned first column, right-aligned numbers."""
    cells = [headers, *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render(results: dict[str, Any]) -> str:
    """The whole report as text."""
    meta, cold, warm = results["meta"], results["cold"], results["warm"]
    parts = [f"dashgate bench, {meta['date']}: Python {meta['python']}, {meta['platform']}, {meta['cpus']} CPUs, "
             f"database: {meta['database']}, commit {meta['commit']}", "", render_cold(cold), "",
             render_gets(warm["gets"]), "", render_posts(warm["posts"]), "", render_round_trips(results["round_trips"])]
    if results.get("capacity"):
        parts += ["", render_capacity(results["capacity"])]
    if results.get("sizes"):
        parts += ["", render_sizes(results["sizes"])]
    rows = [["met" if b["met"] else "NOT MET", b["budget"], b["target"], f"{b['measured']} {b['unit']}".strip()]
            for b in results["budgets"]]
    parts += ["", "Budgets (issues 6 and 12)", table(["", "budget", "target", "measured"], rows)]
    return "\n".join(parts)


def render_cold(cold: dict[str, Any]) -> str:
    """Cold starts per function."""
    baseline = cold.get("baseline")
    counted = "ms_per_m_instructions" in cold
    rows = [[name, *([c.get("import_baseline_ms", "-")] if baseline else []), c["import_ms"],
             *([c.get("import_baseline_m_instructions", "-")] if baseline and counted else []),
             *([c.get("import_m_instructions", "-")] if counted else []),
             c["import_no_bytecode_ms"], FIRST_REQUEST[name], c["first_request_ms"], c["later_requests_ms"],
             f"{c['peak_rss_mb']} (max {c['peak_rss_mb_max']})"] for name, c in cold["functions"].items()]
    runs = next(iter(cold["functions"].values()))["processes"]
    headers = ["function", *([f"import @ {baseline}"] if baseline else []), "import ms",
               *([f"M instr @ {baseline}"] if baseline and counted else []), *(["M instr"] if counted else []),
               "no bytecode ms", "first request", "ms", "later ms", "peak RSS MB"]
    text = [f"Cold start: medians of {runs} fresh processes each, interleaved; bare `python -c pass` = "
            f"{cold['bare_python_ms']} ms, subtracted", table(headers, rows),
            "  no bytecode: the layer's packages without __pycache__, as `sam build` ships them to a read-only /opt"]
    if counted:
        text.append(f"  M instr: millions of instructions beyond `python -c pass`, counted by callgrind (bytecode "
                    f"cached); this machine ran them at {cold['ms_per_m_instructions']} ms per million, "
                    f"{machine_factor(cold)} x the reference machine's {REFERENCE_MS_PER_M_INSTRUCTIONS} "
                    "(the wall-clock budgets below are scaled by that factor)")
    if "boto3_client_ms" in cold:
        text.append(f"  in AWS, register/login/logout also import boto3 and build a Secrets Manager client at init: "
                    f"+{cold['boto3_client_ms']} ms here (health does it at its first connect)")
    return "\n".join(text)


def render_gets(gets: dict[str, Any]) -> str:
    """Warm GETs."""
    rows = [[label, g["p50"], g["p99"], g["db_p50"], g["overhead"]["p50"], g["overhead"]["p99"],
             ",".join(map(str, g["statuses"]))] for label, g in gets.items()]
    n = next(iter(gets.values()))["n"]
    return "\n".join([f"Warm GET, in-process: {n} requests per route, round-robin (ours = total minus waiting for "
                      "PostgreSQL)", table(["route", "p50 ms", "p99 ms", "db p50", "ours p50", "ours p99", "status"],
                                           rows)])


def render_posts(posts: dict[str, Any]) -> str:
    """Warm POSTs, the bare hash, and timing parity."""
    rows = [[label, p["p50"], p["p99"], p["db_p50"], p["argon2_p50"], p.get("queue_p50", 0.0), p["overhead"]["p50"],
             p["overhead"]["p99"], ",".join(map(str, p["statuses"]))] for label, p in posts["routes"].items()]
    extra = [[label, o["ours"], o["ours_vs_bare"], o["with_db"], o.get("queue", 0.0)]
             for label, o in posts["non_hash_overhead_ms"].items()]
    parity = posts["parity"]
    n = next(iter(posts["routes"].values()))["n"]
    return "\n".join([
        f"Warm POST, in-process: {n} each, interleaved with bare argon2 at the same parameters "
        f"(verify {posts['argon2_verify_ms']} ms, hash {posts['argon2_hash_ms']} ms)",
        table(["route", "p50 ms", "p99 ms", "db p50", "argon2 p50", "mail queue p50", "ours p50", "ours p99",
               "status"], rows), "",
        table(["beyond argon2 (medians, ms)", "ours", "ours vs bare argon2", "with db", "mail queue"], extra),
        "  ours = request minus its time in PostgreSQL, in argon2 and putting mail on the queue (a file here, "
        "one SQS call in AWS), each timed inside the request; vs bare = request minus PostgreSQL and the queue "
        "minus the bare call's median", "",
        f"Unknown email {parity['unknown_email_ms']} ms vs wrong password {parity['wrong_password_ms']} ms "
        f"(medians of {parity['pairs']}, interleaved): ratio {parity['ratio']}"])


def render_round_trips(trips: dict[str, Any]) -> str:
    """Statements per operation."""
    rows = [[label, t["round_trips"], t["status"]] for label, t in trips.items()]
    return "\n".join(["Round trips (counted by Store.round_trips)",
                      table(["operation", "round trips", "status"], rows)])


def render_capacity(estimates: dict[str, Any]) -> str:
    """Derived figures: one execution's throughput and the cost per million at list prices."""
    rows = [[label, e["memory_mb"], e["cpu_ms"], e["db_ms"], e["lambda_ms"], e["per_execution_rps"],
             e["lambda_usd_per_million"], e["with_http_api_usd_per_million"]] for label, e in estimates.items()]
    login = sum(estimates[k]["with_http_api_usd_per_million"] for k in ("login form (GET /login/)",
                                                                          "sign in (POST /login/ form)")
                if k in estimates)
    return "\n".join([
        "Capacity and cost, derived (CPU time here scaled to the function's share of a vCPU, 1,769 MB = 1; "
        "plus the database time here and an assumed 0.5 ms network round trip per statement; US East list prices)",
        table(["operation", "MB", "cpu ms", "db ms", "lambda ms", "req/s per execution", "Lambda $/M",
               "+ HTTP API $/M"], rows),
        f"  a million browser sign-ins (form page + POST): ${login:.2f} in Lambda and HTTP API requests"])


def render_sizes(sizes: dict[str, Any]) -> str:
    """Built artefacts."""
    if "skipped" in sizes or "error" in sizes:
        return f"Built sizes: {sizes.get('skipped') or 'sam build failed: ' + sizes['error']}"
    rows = [[name, s["unzipped_kb"], s["zipped_kb"], s["files"], s["python_files"], s["bytecode_files"]]
            for name, s in sizes.items()]
    return "\n".join(["Built sizes (sam build, arm64; Lambda allows 250 MB unzipped, function and layers together)",
                      table(["artefact", "unzipped kB", "zipped kB", "files", ".py", ".pyc"], rows)])


def write_json(results: dict[str, Any], folder: Path) -> Path:
    """`.bench/bench-<UTC time>.json` and `.bench/latest.json`, the same figures as the table."""
    folder.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"bench-{stamp}.json"
    text = json.dumps(results, indent=2) + "\n"
    path.write_text(text)
    (folder / "latest.json").write_text(text)
    return path
