"""Run every measurement and print the report: `.venv/bin/python -m bench` (or `make bench`)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import warnings
from types import ModuleType
from typing import Any

from bench import capacity, cold, report, sizes, warm
from bench.database import bench_database
from bench.fixtures import FUNCTIONS, Account, first_requests, register, unique_email
from bench.warm import load
from tests.support import ROOT

OUTPUT = ROOT / ".bench"
#: Measured requests must never be throttled (throttling is counted separately): registrations come
#: from many addresses of one process, so that limit is lifted; login keeps its defaults (settings
#: refuse limits above 100 guesses a day), and each measured request comes from a new address, each
#: unknown-email attempt names a new address, and a success between wrong passwords clears them.
BENCH_ENV = {
    "SESSION_SECRETS": "b" * 48, "POWERTOOLS_METRICS_NAMESPACE": "dashgate-bench", "AWS_DEFAULT_REGION": "eu-west-1",
    "REGISTER_MAX_PER_IP": "1000000", "IDENTITY_SECRETS": "d" * 48,
    # Mail goes to a local spool and outbox, as in `make run` (cold.measure_imports also times forgot's
    # import with MAIL_QUEUE_URL set: the SQS client it loads in AWS).
    "MAIL_OUTBOX_DIR": str(OUTPUT / "outbox"), "PUBLIC_BASE_URL": "https://dash.example.test",
    "MAIL_FROM": "Dashboard <no-reply@example.test>",
    "PYDANTIC_DISABLE_PLUGINS": "__all__",  # as template.yaml sets it
}
#: Variables that would change what is measured (argon2 stays at its defaults, the OWASP minimum).
CLEARED_PREFIXES = ("SESSION_", "ARGON2_", "LOGIN_", "REGISTER_", "COOKIE_", "DB_", "HEALTHCHECK_", "PYTHON",
                    "IDENTITY_", "ORIGIN_", "MAIL_", "PUBLIC_BASE_URL", "FORGOT_", "REQUIRE_CONFIRMED_",
                    "PASSWORD_RESET_", "EMAIL_CONFIRM_", "SES_")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults take about three minutes on a 2-core machine."""
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--processes", type=int, default=11, help="fresh processes per cold-start figure (>= 9)")
    parser.add_argument("--requests", type=int, default=1000, help="warm requests per GET route")
    parser.add_argument("--posts", type=int, default=100, help="warm requests per POST route")
    parser.add_argument("--baseline", metavar="GIT_REF", help="also time the imports of this commit's handlers")
    parser.add_argument("--no-build", action="store_true", help="skip `sam build` (built sizes)")
    parser.add_argument("--no-instructions", action="store_true",
                        help="skip counting the imports' instructions with callgrind (about two minutes)")
    parser.add_argument("--quick", action="store_true",
                        help="9 processes, 200 GETs, 20 POSTs, no instruction counts: a rough look")
    args = parser.parse_args(argv)
    if args.quick:
        args.processes, args.requests, args.posts, args.no_instructions = 9, 200, 20, True
    args.processes = max(args.processes, 9)
    return args


def environment(database_url: str) -> dict[str, str]:
    """The bench's environment: this process's, minus settings that would skew it, plus BENCH_ENV."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED_PREFIXES)}
    return {**env, **BENCH_ENV, "DATABASE_URL": database_url}


def measure(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Cold starts in fresh processes, then warm requests in this one."""
    handlers: dict[str, ModuleType] = {name: load(name) for name in FUNCTIONS}
    account = Account(email := unique_email("account"), register(handlers["register"], email))
    imports, instructions = cold.measure_imports(
        env, args.processes, with_boto3=importlib.util.find_spec("boto3") is not None, baseline=args.baseline,
        instructions=not args.no_instructions)
    children = cold.measure_first_requests(env, args.processes, first_requests(handlers, account))
    results = {
        "cold": {**cold.summarise(imports, children, instructions), "baseline": args.baseline},
        "warm": {"gets": warm.measure_gets(handlers, account, args.requests),
                 "posts": warm.measure_posts(handlers, account, args.posts)},
        "round_trips": warm.count_round_trips(handlers, account),
    }
    for module in handlers.values():
        module.runtime.store.close()
    return results


def metadata(database: str, args: argparse.Namespace) -> dict[str, Any]:
    """Where and when the figures were measured."""
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(), "database": database, "commit": commit or "unknown",
            "argon2": "defaults (t=2, m=19456 KiB, p=1)", "processes": args.processes, "requests": args.requests,
            "posts": args.posts, "baseline": args.baseline}


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the JSON; exit 0 (budgets are reported, not enforced)."""
    args = parse(argv)
    out = sys.stdout
    warnings.filterwarnings("ignore", "No application metrics to publish")
    shutil.rmtree(OUTPUT / "outbox", ignore_errors=True)
    with bench_database() as (url, where):
        env = environment(url)
        os.environ.clear()
        os.environ.update(env)
        # The functions' JSON logs and metrics go to stdout, as in Lambda; here to /dev/null.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            results = {"meta": metadata(where, args), **measure(args, env)}
    results["sizes"] = None if args.no_build else sizes.measure_sizes(OUTPUT / "sam-build")
    results["capacity"] = capacity.estimate(results)
    results["budgets"] = report.budgets(results)
    print(report.render(results), file=out)
    print(f"\nJSON: {report.write_json(results, OUTPUT).relative_to(ROOT)}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
