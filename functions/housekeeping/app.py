"""Lambda entry point for housekeeping, run by an EventBridge schedule: prune dead sessions, forgotten
throttle counters and spent one-time tokens, off the sign-in path."""

from __future__ import annotations

from typing import Any

from dashgate.errors import ServiceUnavailable
from dashgate.runtime import Runtime
from dashgate.users import prune

runtime = Runtime("housekeeping", sessions=False)
#: Seconds kept free before the function's timeout (the last batch, the log line, the metrics).
MARGIN_SECONDS = 15


@runtime.logger.inject_lambda_context
@runtime.metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    """Prune, and say how much; a database outage is logged and retried at the next run."""
    # Stop well before the function's timeout; what is left waits for the next run.
    seconds = max(1.0, context.get_remaining_time_in_millis() / 1000 - MARGIN_SECONDS)
    try:
        sessions, counters, tokens = prune(runtime.settings, runtime.store, now=runtime.now(), seconds=seconds)
    except ServiceUnavailable as err:
        runtime.log_error(err)
        raise  # the schedule's invocation fails visibly (Errors metric); the next run catches up
    runtime.metrics.add_metric(name="PrunedSessions", unit="Count", value=sessions)
    runtime.metrics.add_metric(name="PrunedCounters", unit="Count", value=counters)
    runtime.metrics.add_metric(name="PrunedTokens", unit="Count", value=tokens)
    runtime.logger.info("Pruned", extra={"sessions": sessions, "counters": counters, "tokens": tokens})
    return {"sessions": sessions, "counters": counters, "tokens": tokens}
