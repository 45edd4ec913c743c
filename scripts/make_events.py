"""Write events/*.json: payload 2.0 events for `sam local invoke`, built as API Gateway builds them.

Run with `.venv/bin/python scripts/make_events.py`; tests/deploy/test_events.py runs every file
through its real handler, so they cannot go stale unnoticed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import ORIGIN, make_event  # noqa: E402

SAME_ORIGIN = {"origin": ORIGIN, "sec-fetch-site": "same-origin"}
JANE = {"email": "jane@example.com", "password": "correct horse battery", "first_name": "Jane", "last_name": "Doe"}
# A form token from a page served long ago: real browsers get a fresh one with the form (GET),
# so the form events show the CSRF refusal; the JSON events show the full behaviour.
STALE = {"csrf_token": "stale-token-from-an-old-page"}

EVENTS = {
    "register-get": make_event("GET", "/register/"),
    "register-post-form": make_event("POST", "/register/", form={**JANE, "password_confirm": JANE["password"], **STALE},
                                     headers=SAME_ORIGIN, cookies=["__Host-csrf=abc"]),
    "register-post-json": make_event("POST", "/register/", json_body=JANE, headers=SAME_ORIGIN),
    "login-get": make_event("GET", "/login/", query="next=/dash/reports"),
    "login-post-form": make_event("POST", "/login/", form={"email": JANE["email"], "password": JANE["password"],
                                                           "remember_me": "y", "next": "/dash/", **STALE},
                                  headers=SAME_ORIGIN, cookies=["__Host-csrf=abc"]),
    "login-post-json": make_event("POST", "/login/", json_body={"email": JANE["email"], "password": JANE["password"],
                                                                "remember_me": True}, headers=SAME_ORIGIN),
    "logout-get": make_event("GET", "/logout/", headers={"sec-fetch-site": "same-origin"}),
    "logout-get-cross-site": make_event("GET", "/logout/", headers={"sec-fetch-site": "cross-site"}),
    "logout-post-json": make_event("POST", "/logout/", json_body={}, headers=SAME_ORIGIN),
    "health-get": make_event("GET", "/healthcheck/"),
    "health-get-json": make_event("GET", "/healthcheck/", headers={"accept": "application/json"}),
}


def main() -> None:
    """Write every event with stable ids and times, so regenerating changes nothing."""
    for name, event in EVENTS.items():
        event["requestContext"].update(requestId=f"{name}-0000000000000000", timeEpoch=1795795200000,
                                       time="27/Nov/2026:16:00:00 +0000")
        event["headers"]["x-amzn-trace-id"] = "Root=1-6928a000-000000000000000000000000"
        (ROOT / "events" / f"{name}.json").write_text(json.dumps(event, indent=2) + "\n")


if __name__ == "__main__":
    main()
