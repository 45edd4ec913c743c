"""GET/POST /logout/ and GET /healthcheck/ through the real handlers."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import PASSWORD
from tests.support import CSRF_RE, ORIGIN, Browser, LambdaContext, make_event, response_cookies

CREDENTIALS = {"email": "alice@example.com", "password": PASSWORD}


def live_sessions(db) -> int:
    return db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0]


@pytest.fixture
def signed_in(browser: Browser, alice: dict) -> Browser:
    assert browser.submit("/login/", CREDENTIALS)["statusCode"] == 303
    return browser


# -- logout ---------------------------------------------------------------------------------------
def test_logout_revokes_the_session_and_clears_the_cookie(signed_in: Browser, db) -> None:
    old_cookie = f"__Host-session={signed_in.jar['__Host-session']}"

    response = signed_in.get("/logout/", headers={"sec-fetch-site": "same-origin"})

    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/"
    cleared = response_cookies(response)["__Host-session"]
    assert cleared == {"name": "__Host-session", "value": "", "path": "/", "max-age": "0", "secure": True,
                       "httponly": True, "samesite": "Lax"}
    assert live_sessions(db) == 0
    # THEN replaying the old cookie finds a signed-out visitor
    replay = signed_in.get("/login/", cookies=[old_cookie])
    assert replay["statusCode"] == 200 and 'name="password"' in replay["body"]


def test_json_logout_answers_204(signed_in: Browser, db) -> None:
    response = signed_in.post("/logout/", json_body={}, headers={"origin": ORIGIN})

    assert response["statusCode"] == 204
    assert response_cookies(response)["__Host-session"]["max-age"] == "0"
    assert live_sessions(db) == 0


def test_signed_out_callers_get_the_same_answer(browser: Browser) -> None:
    response = browser.get("/logout/")

    assert response["statusCode"] == 303 and response["headers"]["Location"] == "/"
    assert response_cookies(response)["__Host-session"]["max-age"] == "0"


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_cross_site_get_does_not_log_out_but_offers_a_button(signed_in: Browser, db, site: str) -> None:
    response = signed_in.get("/logout/", headers={"sec-fetch-site": site})

    assert response["statusCode"] == 200
    assert '<form method="post" action="/logout/">' in response["body"]
    assert "__Host-session" not in response_cookies(response)
    assert live_sessions(db) == 1
    # WHEN the user clicks the button on our page
    token = CSRF_RE.search(response["body"]).group(1)
    clicked = signed_in.post("/logout/", form={"csrf_token": token},
                             headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"})
    assert clicked["statusCode"] == 303
    assert live_sessions(db) == 0


@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "same-origin", "sec-fetch-mode": "no-cors", "sec-fetch-dest": "image"},  # <img src=/logout/>
    {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"},  # a background fetch
])
def test_a_same_site_get_that_is_not_a_navigation_does_not_log_out(signed_in: Browser, db, headers: dict) -> None:
    response = signed_in.get("/logout/", headers=headers)

    assert response["statusCode"] == 200 and "__Host-session" not in response_cookies(response)
    assert live_sessions(db) == 1


def test_a_link_on_the_dashboard_logs_out(signed_in: Browser, db) -> None:
    headers = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}

    assert signed_in.get("/logout/", headers=headers)["statusCode"] == 303
    assert live_sessions(db) == 0


def test_a_browser_post_without_a_csrf_token_changes_nothing(signed_in: Browser, db) -> None:
    response = signed_in.post("/logout/", form={}, headers={"origin": ORIGIN})

    assert response["statusCode"] == 403
    assert live_sessions(db) == 1


def test_logout_costs_one_round_trip(signed_in: Browser) -> None:
    store = signed_in.handlers["logout"].runtime.store
    before = store.round_trips

    signed_in.get("/logout/")

    assert store.round_trips - before == 1


def test_without_https_locally_cookies_lose_secure_and_the_prefix(load, db) -> None:
    browser = Browser({name: load(name, SESSION_COOKIE_SECURE="false") for name in ("register", "login", "logout")})
    from tests.conftest import ALICE

    browser.submit("/register/", ALICE)
    login = browser.submit("/login/", CREDENTIALS)
    logout = browser.get("/logout/")

    cookie = response_cookies(login)["session"]
    assert "secure" not in cookie and cookie["httponly"] and cookie["samesite"] == "Lax"
    assert "Strict-Transport-Security" not in login["headers"]
    assert response_cookies(logout)["session"]["max-age"] == "0"


def test_a_cookie_domain_is_set_and_cleared_alike(load, db) -> None:
    names = ("register", "login", "logout")
    browser = Browser({name: load(name, COOKIE_DOMAIN="example.com") for name in names})
    from tests.conftest import ALICE

    browser.submit("/register/", ALICE)
    set_cookie = response_cookies(browser.submit("/login/", CREDENTIALS))["session"]
    cleared = response_cookies(browser.get("/logout/"))["session"]

    assert set_cookie["domain"] == cleared["domain"] == "example.com"
    assert set_cookie["path"] == cleared["path"] == "/"


# -- health ---------------------------------------------------------------------------------------
def health(module, accept: str = "*/*") -> dict:
    return module.lambda_handler(make_event("GET", "/healthcheck/", headers={"accept": accept}), LambdaContext())


def test_health_answers_200_in_plain_text(handlers: dict) -> None:
    response = health(handlers["health"])

    assert response["statusCode"] == 200
    assert response["body"] == "The app and database are working fine"
    assert response["headers"]["Content-Type"] == "text/plain; charset=utf-8"
    assert response["headers"]["Cache-Control"] == "no-store"
    assert "cookies" not in response


def test_health_in_json_reports_latency(handlers: dict) -> None:
    body = json.loads(health(handlers["health"], "application/json")["body"])

    assert body["status"] == "ok" and body["database"]["ok"] is True
    assert body["database"]["latency_ms"] >= 0


def test_health_runs_the_dashboards_query(load, db) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS public.stock_prices (ticker text)")
    module = load("health", HEALTHCHECK_SQL="select ticker from public.stock_prices limit 1")
    try:
        assert health(module)["statusCode"] == 200
        db.execute("DROP TABLE public.stock_prices")
        assert health(module)["statusCode"] == 503  # the query fails: unhealthy
    finally:
        db.execute("DROP TABLE IF EXISTS public.stock_prices")


@pytest.fixture(scope="module")
def silent_server():
    """A port that accepts TCP connections and never answers: a database host gone quiet."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes handshakes; nobody ever reads or writes
    yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/postgres"
    listener.close()


@pytest.mark.parametrize("setting", [
    {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres"},  # a closed port
    {"DATABASE_URL": "silent"},  # a host that accepts and never answers: the connect timeout
    {"HEALTHCHECK_SQL": "select pg_sleep(30)"},  # a query that hangs: the statement timeout
])
def test_health_answers_503_within_five_seconds_without_detail(load, silent_server: str, setting: dict) -> None:
    if setting.get("DATABASE_URL") == "silent":
        setting = {"DATABASE_URL": silent_server}
    module = load("health", **setting)

    started = time.monotonic()
    response = health(module)
    first = time.monotonic() - started
    json_response = health(module, "application/json")

    assert first < 5
    assert response["statusCode"] == json_response["statusCode"] == 503
    assert response["body"] == "The database is not reachable"
    assert json.loads(json_response["body"]) == {"status": "unavailable", "message": "The database is not reachable",
                                                 "database": {"ok": False}}
    assert response["headers"]["Cache-Control"] == "no-store" and "cookies" not in response


def test_health_costs_one_round_trip(handlers: dict) -> None:
    store = handlers["health"].runtime.store
    health(handlers["health"])
    before = store.round_trips

    health(handlers["health"])

    assert store.round_trips - before == 1


def test_a_json_logout_needs_no_body(signed_in: Browser, db) -> None:
    response = signed_in.post("/logout/", body=b"", content_type="application/json", headers={"origin": ORIGIN})

    assert response["statusCode"] == 204 and live_sessions(db) == 0


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status"), [
    ("register", "POST", "/register/", {"body": "x", "content_type": "text/plain"}, 415),
    ("login", "POST", "/login/", {"form": {"email": "a@b.co"}}, 403),
    ("login", "PUT", "/login/", {}, 405),
    ("logout", "POST", "/logout/", {"body": "%%%", "content_type": "application/json"}, 400),
    ("health", "DELETE", "/healthcheck/", {}, 405),
])
def test_error_responses_carry_no_store_and_hsts_too(handlers: dict, name, method, path, kwargs, status) -> None:
    response = handlers[name].lambda_handler(make_event(method, path, **kwargs), LambdaContext())

    assert response["statusCode"] == status
    assert response["headers"]["Cache-Control"] == "no-store"
    assert response["headers"]["Strict-Transport-Security"] == "max-age=31536000"
