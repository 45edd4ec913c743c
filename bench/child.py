"""Run by bench.cold in a fresh interpreter: import one handler as Lambda does, then time its first requests.

Usage: python bench/child.py <function> <repo root> <events.json> <result.json>. It imports nothing of
the benchmark or the tests, so the handler's imports and memory are its own.
"""

from __future__ import annotations

import json
import resource
import sys
import time


class Context:
    """The attributes of Lambda's context object that Powertools reads."""

    function_name = "dashgate-bench"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:dashgate-bench"
    aws_request_id = "bench"


def peak_rss_kb() -> int:
    """This process's peak resident memory. getrusage's ru_maxrss would not do: Linux carries it across
    exec, so a child of a big parent reports the parent's peak. VmHWM belongs to this image alone."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def outcome(response: dict) -> int | str:
    """A response's status, an authorizer's verdict, or how many records of a batch failed (the mailer)."""
    if "batchItemFailures" in response:
        return f"{len(response['batchItemFailures'])} failed"
    return response.get("statusCode") or ("allowed" if response.get("isAuthorized") else "denied")


def main() -> None:
    """Import, answer the first event, then the rest; write timings and the peak RSS as JSON."""
    name, root, events_path, result_path = sys.argv[1:5]
    # Lambda puts the function's code first on sys.path and the layer (here: shared/) after it.
    sys.path[0:1] = [f"{root}/functions/{name}", f"{root}/shared"]
    with open(events_path) as f:
        events = json.load(f)
    started = time.perf_counter_ns()
    import app  # the handler module, imported as the runtime imports it

    imported = time.perf_counter_ns()
    timings, statuses = [], []
    for event in events:
        before = time.perf_counter_ns()
        response = app.lambda_handler(event, Context())
        timings.append((time.perf_counter_ns() - before) / 1e6)
        statuses.append(outcome(response))
    result = {"import_ms": (imported - started) / 1e6, "request_ms": timings, "statuses": statuses,
              "peak_rss_kb": peak_rss_kb()}
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
