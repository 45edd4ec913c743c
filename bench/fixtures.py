"""What the measurements need: real payload 2.0 events, an account, and fresh sessions in the database."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import ModuleType
from typing import Any

from dashgate.runtime import utcnow
from dashgate.sessions import hash_session_id
from dashgate.store import NewSession
from tests.support import ORIGIN, ROOT, LambdaContext, make_event

PASSWORD = "correct horse battery staple"
SAME_ORIGIN = {"origin": ORIGIN, "sec-fetch-site": "same-origin"}
CONTEXT = LambdaContext()
#: The functions measured: the four of the SPEC, the dashboard's authorizer, account recovery and its mailer.
FUNCTIONS = ("register", "login", "logout", "health", "authorizer", "forgot", "reset", "change", "confirm", "mailer")
#: What each function's first request in a fresh process is: its main operation (for reset and confirm,
#: a link that does not work: a working one is used up by its first request).
FIRST_REQUEST = {"register": "POST /register/ JSON", "login": "POST /login/ JSON", "logout": "POST /logout/ JSON",
                 "health": "GET /healthcheck/", "authorizer": "authorize /dash/, signed in",
                 "forgot": "POST /password/forgot/ JSON", "reset": "POST /password/reset/ JSON, a used link",
                 "change": "GET /password/change/ signed in", "confirm": "POST /email/confirm/ JSON, a used link",
                 "mailer": "an SQS batch of one reset request for an unknown address"}
_serial = itertools.count()


@dataclass(frozen=True)
class Account:
    """The registered user the measurements sign in as."""

    email: str
    user_id: int


def unique_email(kind: str) -> str:
    """An address no earlier request has used (each run has a database of its own)."""
    return f"bench-{kind}-{next(_serial)}@example.com"


def unique_ip() -> str:
    """A source address per request, so per-IP counters never throttle a measurement."""
    n = next(_serial)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def post_json(path: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """A same-origin JSON POST, as the dashboard's scripts send it."""
    return make_event("POST", path, json_body=body, headers=SAME_ORIGIN, source_ip=unique_ip(), **kwargs)


def sign_up(body: dict[str, str]) -> dict[str, Any]:
    """POST /register/ (JSON) for a new account."""
    return post_json("/register/", {"first_name": "Bench", "last_name": "Mark", "password": PASSWORD, **body})


def register(register_module: ModuleType, email: str) -> int:
    """Create an account through the real register function; its user id."""
    response = register_module.lambda_handler(sign_up({"email": email}), CONTEXT)
    assert response["statusCode"] == 201, response
    return int(json.loads(response["body"])["user"]["id"])


def mint_sessions(runtime: Any, user_id: int, count: int) -> list[str]:
    """`count` live sessions of one user, as cookie strings, stored the way a login stores them."""
    cookies = []
    stored = runtime.store._run(lambda conn: conn.execute(
        "SELECT password_hash FROM public.users WHERE id = %s", (user_id,)).fetchone()[0])
    for _ in range(count):
        session_id, token = runtime.tokens.new_session()
        now = utcnow()
        runtime.store.record_login_success(
            user_id=user_id, ip="10.0.0.1", now=now, new_hash=None, checked_hash=stored,
            counted=["login-email:bench", "login-ip:10.0.0.1"],
            reset=["login-email:bench"], presented_hash=None,
            session=NewSession(hash_session_id(session_id), False, now + timedelta(hours=1)))
        cookies.append(f"{runtime.tokens.session_cookie_name}={token}")
    return cookies


def authorize(cookies: list[str]) -> dict[str, Any]:
    """The event API Gateway sends a REQUEST authorizer (payload 2.0) for GET /dash/ with these cookies."""
    event = make_event("GET", "/dash/", cookies=cookies, source_ip=unique_ip())
    event.update(type="REQUEST", routeKey="ANY /dash/{proxy+}", identitySource=["; ".join(cookies)],
                 routeArn="arn:aws:execute-api:eu-west-1:123456789012:abc123xyz/$default/GET/dash/")
    return event


def outcome(response: dict[str, Any]) -> int | str:
    """A response's status, an authorizer's verdict, or how many records of a batch failed (the mailer)."""
    if "statusCode" in response:
        return response["statusCode"]
    if "batchItemFailures" in response:
        return f"{len(response['batchItemFailures'])} failed"
    return "allowed" if response.get("isAuthorized") else "denied"


def login_form(runtime: Any, email: str, password: str) -> dict[str, Any]:
    """A browser's POST /login/: the form with its CSRF token and cookie, same-origin."""
    secret = runtime.tokens.new_csrf_secret()
    return make_event("POST", "/login/", form={"csrf_token": runtime.tokens.csrf_token(secret), "email": email,
                                               "password": password},
                      cookies=[f"{runtime.tokens.csrf_cookie_name}={secret}"], headers=SAME_ORIGIN,
                      source_ip=unique_ip())


def first_requests(handlers: dict[str, ModuleType], account: Account, count: int = 6) -> Callable[[str], list]:
    """For a function's name, `count` fresh events of its main operation (FIRST_REQUEST)."""
    def sessions() -> list[str]:
        return mint_sessions(handlers["logout"].runtime, account.user_id, count)

    used_link = "used-" * 8
    make: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "health": lambda: [make_event("GET", "/healthcheck/") for _ in range(count)],
        "login": lambda: [post_json("/login/", {"email": account.email, "password": PASSWORD}) for _ in range(count)],
        "register": lambda: [sign_up({"email": unique_email("cold")}) for _ in range(count)],
        "logout": lambda: [post_json("/logout/", {}, cookies=[cookie]) for cookie in sessions()],
        "authorizer": lambda: [authorize([cookie]) for cookie in sessions()],
        "forgot": lambda: [post_json("/password/forgot/", {"email": unique_email("forgot")}) for _ in range(count)],
        "reset": lambda: [post_json("/password/reset/", {"token": used_link, "password": PASSWORD})
                          for _ in range(count)],
        "change": lambda: [make_event("GET", "/password/change/", cookies=[cookie]) for cookie in sessions()],
        "confirm": lambda: [post_json("/email/confirm/", {"token": used_link}) for _ in range(count)],
        "mailer": lambda: [sqs_batch(unique_email("mailer")) for _ in range(count)],
    }
    return lambda name: make[name]()


def sqs_batch(email: str) -> dict[str, Any]:
    """The mailer's event: an SQS batch of one forgot-password request (events/mailer-sqs.json's shape)."""
    event = json.loads((ROOT / "events" / "mailer-sqs.json").read_text())
    record = event["Records"][0]
    record["body"] = json.dumps({"kind": "password_reset", "email": email, "user_id": None})
    record["messageId"] = f"bench-{next(_serial)}"
    event["Records"] = [record]
    return event
