"""Capacity and cost on paper: the measured time per operation, in Lambda terms, at list prices."""

from __future__ import annotations

import math
from typing import Any

from samtranslator.yaml_helper import yaml_parse

from tests.support import ROOT

#: Lambda gives a function one vCPU at 1,769 MB, and CPU in proportion to memory below that
#: (AWS Lambda Developer Guide, "Configure Lambda function memory").
FULL_VCPU_MB = 1769
#: List prices, US East, first tier (aws.amazon.com/lambda/pricing: Arm; aws.amazon.com/api-gateway/pricing:
#: HTTP APIs up to 300 million requests a month). README "Performance, capacity and cost" gives the dates.
LAMBDA_ARM_PER_GB_SECOND = 0.0000133334
LAMBDA_PER_REQUEST = 0.20 / 1e6
HTTP_API_PER_REQUEST = 1.00 / 1e6
#: An assumption, not a measurement: one statement's network round trip from Lambda to RDS in the same Region.
NETWORK_MS_PER_ROUND_TRIP = 0.5
#: Operation → (function, row of the warm tables, round trips it makes).
OPERATIONS = {
    "login form (GET /login/)": ("login", "GET /login/ signed out", 0),
    "sign in (POST /login/ form)": ("login", "POST /login/ form", 2),
    "sign up (POST /register/ JSON)": ("register", "POST /register/ JSON", 1),
    "signed-in check (GET /login/)": ("login", "GET /login/ signed in", 1),
    "log out (POST /logout/ JSON)": ("logout", "POST /logout/ JSON", 1),
    "health check": ("health", "GET /healthcheck/", 1),
    "authorize /dash/": ("authorizer", "authorize /dash/ signed in", 1),
}


def memory_sizes() -> dict[str, int]:
    """Each function's MemorySize in template.yaml (Globals when it sets none)."""
    template = yaml_parse((ROOT / "template.yaml").read_text())
    default = template["Globals"]["Function"]["MemorySize"]
    return {logical.removesuffix("Function").lower(): int(resource["Properties"].get("MemorySize", default))
            for logical, resource in template["Resources"].items() if resource["Type"] == "AWS::Serverless::Function"}


def estimate(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per operation: CPU and database time here, Lambda duration, requests/s per execution, $ per million."""
    memory, rows = memory_sizes(), {**results["warm"]["gets"], **results["warm"]["posts"]["routes"]}
    estimates = {}
    for label, (function, row, round_trips) in OPERATIONS.items():
        if row not in rows or function not in memory:
            continue
        measured, mb = rows[row], memory[function]
        cpu_ms = measured["overhead"]["p50"] + measured.get("argon2_p50", 0.0)
        waiting_ms = measured["db_p50"] + round_trips * NETWORK_MS_PER_ROUND_TRIP  # CPU share does not speed it
        lambda_ms = cpu_ms * FULL_VCPU_MB / min(mb, FULL_VCPU_MB) + waiting_ms
        lambda_cost = LAMBDA_PER_REQUEST + math.ceil(lambda_ms) / 1000 * mb / 1024 * LAMBDA_ARM_PER_GB_SECOND
        estimates[label] = {"memory_mb": mb, "cpu_ms": round(cpu_ms, 2), "db_ms": round(measured["db_p50"], 2),
                            "lambda_ms": round(lambda_ms, 1), "per_execution_rps": round(1000 / lambda_ms, 1),
                            "lambda_usd_per_million": round(lambda_cost * 1e6, 2),
                            "with_http_api_usd_per_million": round((lambda_cost + HTTP_API_PER_REQUEST) * 1e6, 2)}
    return estimates
