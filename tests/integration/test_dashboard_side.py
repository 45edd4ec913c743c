"""The dashboard side: the gateway authorizer, the WSGI guard in a Flask host, and signing out everywhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask, jsonify, request

from dashgate.assertions import Assertions
from dashgate.errors import ConfigurationError
from dashgate.guard import DashgateGuard, current_user
from dashgate.sessions import Tokens
from dashgate.settings import Settings
from tests.conftest import IDENTITY_KEY, PASSWORD
from tests.support import ORIGIN, ROOT, Browser, LambdaContext, make_event

CREDENTIALS = {"email": "alice@example.com", "password": PASSWORD}
VERIFY = "v" * 40


def authorizer_event(cookies: list[str] | None, path: str = "/dash/reports") -> dict:
    """An HTTP API REQUEST authorizer event, payload 2.0."""
    event = make_event("GET", path, cookies=cookies)
    event.update(type="REQUEST", routeArn="arn:aws:execute-api:eu-west-1:123456789012:abc123xyz/$default/GET/dash",
                 routeKey="ANY /dash/{proxy+}", identitySource=["; ".join(cookies)] if cookies else [],
                 pathParameters={"proxy": path.removeprefix("/dash/")})
    return event


@pytest.fixture
def session_cookie(browser: Browser, alice: dict) -> str:
    browser.submit("/login/", CREDENTIALS)
    return browser.jar["__Host-session"]


# -- the authorizer -------------------------------------------------------------------------------------
def test_the_authorizer_allows_a_live_session_and_passes_the_user(load, session_cookie: str) -> None:
    authorizer = load("authorizer")

    answer = authorizer.lambda_handler(authorizer_event([f"__Host-session={session_cookie}"]), LambdaContext())

    assert answer["isAuthorized"] is True
    assert answer["context"]["email"] == "alice@example.com" and answer["context"]["first_name"] == "Alice"
    assert answer["context"]["user_id"].isdigit()
    # what the gateway passes to the host: signed with the identity key, for at most 60 s
    verifier = Assertions(Settings(), (IDENTITY_KEY,))
    user = verifier.verify(answer["context"]["assertion"], datetime.now(UTC))
    assert (user.id, user.email, user.first_name) == (int(answer["context"]["user_id"]), "alice@example.com", "Alice")
    assert verifier.verify(answer["context"]["assertion"], datetime.now(UTC) + timedelta(seconds=60)) is None


@pytest.mark.parametrize("cookies", [None, ["other=1"], ["__Host-session=forged.value"]])
def test_the_authorizer_denies_without_a_valid_cookie_and_never_raises(load, alice: dict, cookies) -> None:
    # (a request without cookies: Powertools' APIGatewayAuthorizerEventV2.cookies raised on it in
    # some versions; the authorizer reads the raw list)
    authorizer = load("authorizer")

    assert authorizer.lambda_handler(authorizer_event(cookies), LambdaContext()) == {"isAuthorized": False}


def test_the_authorizer_denies_after_logout_and_during_an_outage(load, browser: Browser, session_cookie: str) -> None:
    browser.get("/logout/")
    event = authorizer_event([f"__Host-session={session_cookie}"])

    assert load("authorizer").lambda_handler(event, LambdaContext())["isAuthorized"] is False
    closed = load("authorizer", DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres")
    assert closed.lambda_handler(event, LambdaContext()) == {"isAuthorized": False}


# -- the guard in a Flask host --------------------------------------------------------------------------
@pytest.fixture
def host(env: dict, database_url: str, extra_env: dict):
    """A small Flask dashboard host with the guard in front of /dash."""
    app = Flask("dashboard")

    @app.route("/dash/")
    @app.route("/dash/<path:page>")
    def dash(page: str = ""):
        user = current_user(request.environ)
        return f"Hello, {user.first_name}! ({page})"

    @app.route("/_dash-update-component", methods=["POST"])
    @app.route("/dash/_dash-update-component", methods=["POST"])
    def update():
        return jsonify({"ok": True})

    @app.route("/public")
    def public():
        return jsonify({"user_id_header": request.headers.get("X-Dashgate-User-Id"),
                        "identity_header": request.headers.get("X-Dashgate-Identity"),
                        "origin_header": request.headers.get("X-Dashgate-Origin-Verify"),
                        "user": bool(current_user(request.environ))})

    guard = DashgateGuard(app.wsgi_app, settings=Settings.from_env({**env, **extra_env}))
    app.wsgi_app = guard
    yield app.test_client(), guard
    guard.store.close()


@pytest.fixture
def extra_env() -> dict:
    """Settings the host adds to the functions' environment (none: no origin enforcement)."""
    return {}


def test_a_signed_out_page_request_goes_to_login_with_next(host) -> None:
    client, _ = host

    response = client.get("/dash/reports?ticker=AAPL")

    assert response.status_code == 303
    assert response.headers["Location"] == "/login/?next=%2Fdash%2Freports%3Fticker%3DAAPL"


def test_a_signed_in_cookie_reaches_the_app_with_the_user(host, session_cookie: str) -> None:
    client, _ = host
    client.set_cookie("__Host-session", session_cookie)

    response = client.get("/dash/reports")

    assert response.status_code == 200 and response.text == "Hello, Alice! (reports)"


@pytest.mark.parametrize(("path", "headers"), [
    ("/dash/_dash-update-component", {"Content-Type": "application/json", "Accept": "application/json"}),
    ("/dash/data", {"X-Requested-With": "XMLHttpRequest"}),
])
def test_background_requests_get_401_json_not_a_redirect(host, path: str, headers: dict) -> None:
    client, _ = host

    response = client.post(path, data="{}", headers=headers)

    assert response.status_code == 401
    assert response.json["error"] == "unauthenticated" and response.json["login_url"].startswith("/login/?next=")


def assertion(key: str = IDENTITY_KEY, *, age: int = 0, user_id: int = 7) -> str:
    """An identity assertion as the authorizer makes it, signed with `key`, issued `age` seconds ago."""
    from dashgate.store import User

    user = User(user_id, "gw@example.com", "Gate", None, datetime.now(UTC), False)
    return Assertions(Settings(), (key,)).issue(user, datetime.now(UTC) - timedelta(seconds=age))


@pytest.mark.parametrize("extra_env", [{}, {"ORIGIN_VERIFY_SECRETS": VERIFY}], ids=["open host", "locked host"])
def test_unsigned_identity_headers_and_the_origin_value_alone_get_nothing(host, extra_env: dict) -> None:
    client, _ = host
    # what the old gateway sent, and a leaked origin-verify value (from logs, a debug page, http://)
    spoof = {"X-Dashgate-User-Id": "1", "X-Dashgate-Email": "admin@example.com", "X-Dashgate-First-Name": "Admin",
             "X-Dashgate-Identity-Verify": VERIFY, "X-Dashgate-Origin-Verify": VERIFY}

    page = client.get("/dash/", headers=spoof)
    public = client.get("/public", headers={**spoof, "X-Dashgate-Identity": "forged"})

    assert page.status_code == 303
    assert public.json == {"user_id_header": None, "identity_header": None, "origin_header": None, "user": False}


def test_a_valid_assertion_from_the_gateway_is_trusted_without_a_database_query(host) -> None:
    client, guard = host
    before = guard.store.round_trips

    response = client.get("/dash/", headers={"X-Dashgate-Identity": assertion(age=50)})

    assert response.status_code == 200 and response.text.startswith("Hello, Gate!")
    assert guard.store.round_trips == before  # no database query


@pytest.mark.parametrize("presented", ["bad signature", "another key", "expired", "another salt", "too long"])
def test_an_assertion_that_is_forged_foreign_or_expired_means_signed_out(host, presented: str) -> None:
    client, _ = host
    value = {"bad signature": assertion()[:-3] + "xyz", "another key": assertion("x" * 40),
             "expired": assertion(age=61), "too long": assertion(age=-3600),  # valid for an hour: never minted so
             # a token the same key signed for another purpose is no assertion (salted per purpose)
             "another salt": Tokens(Settings(), (IDENTITY_KEY,)).device_token("gw@example.com", datetime.now(UTC))
             }[presented]

    assert client.get("/dash/", headers={"X-Dashgate-Identity": value}).status_code == 303


@pytest.mark.parametrize("extra_env", [{"ORIGIN_VERIFY_SECRETS": f"{VERIFY},{'p' * 40}"}])
def test_a_host_locked_to_the_gateway_refuses_direct_requests(host, extra_env: dict) -> None:
    client, _ = host

    direct = client.get("/public")
    direct_with_identity = client.get("/dash/", headers={"X-Dashgate-Identity": assertion()})
    wrong = client.get("/public", headers={"X-Dashgate-Origin-Verify": "w" * 40})
    through_gateway = client.get("/public", headers={"X-Dashgate-Origin-Verify": VERIFY})
    previous_value = client.get("/dash/", headers={"X-Dashgate-Origin-Verify": "p" * 40,
                                                   "X-Dashgate-Identity": assertion()})

    assert direct.status_code == direct_with_identity.status_code == wrong.status_code == 403
    assert through_gateway.status_code == 200
    assert through_gateway.json["origin_header"] is None  # the app never sees the secret
    assert previous_value.status_code == 200  # rotation: every listed value is accepted


def test_after_logout_the_authorizer_denies_and_an_assertion_it_made_dies_within_60_s(
        load, browser: Browser, session_cookie: str) -> None:
    # GIVEN the gateway cached an allow (and its assertion) for this Cookie header before the logout
    cached = load("authorizer").lambda_handler(authorizer_event([f"__Host-session={session_cookie}"]),
                                               LambdaContext())["context"]["assertion"]
    browser.get("/logout/", headers={"sec-fetch-site": "same-origin", "sec-fetch-mode": "navigate",
                                     "referer": f"{ORIGIN}/dash/"})
    verifier = Assertions(Settings(), (IDENTITY_KEY,))
    now = datetime.now(UTC)

    # THEN once the cache (at most 30 s) has expired the authorizer is asked again and denies, and
    # the cached assertion itself is refused by the host 60 s after it was made, whatever happens
    fresh = load("authorizer").lambda_handler(authorizer_event([f"__Host-session={session_cookie}"]), LambdaContext())
    assert fresh == {"isAuthorized": False}
    assert verifier.verify(cached, now + timedelta(seconds=30)) is not None
    assert verifier.verify(cached, now + timedelta(seconds=61)) is None


@pytest.mark.parametrize("path", ["//dash/", "///dash/reports", "//_dash-update-component", "/dash//"])
def test_repeated_slashes_do_not_get_past_the_guard(host, path: str) -> None:
    # Werkzeug routes "//dash/" to the "/dash/" rule: the guard must see the same path it routes
    from werkzeug.test import create_environ, run_wsgi_app

    client, _ = host
    environ = create_environ("/", method="POST" if "update" in path else "GET", json={} if "update" in path else None)
    environ["PATH_INFO"] = path  # as a server passes it on (a test client would read "//dash" as a host)

    body, status, _ = run_wsgi_app(client.application, environ)

    assert status.split()[0] in ("303", "401")
    assert b"Hello" not in b"".join(body) and b'"ok"' not in b"".join(body)


@pytest.mark.parametrize("extra_env", [{"ORIGIN_VERIFY_SECRETS": VERIFY}])
def test_an_exempt_path_answers_a_load_balancer_without_the_origin_value(env: dict, extra_env: dict) -> None:
    app = Flask("dashboard")
    app.add_url_rule("/ping", "ping", lambda: "pong")
    app.add_url_rule("/other", "other", lambda: "other")
    guard = DashgateGuard(app.wsgi_app, settings=Settings.from_env({**env, **extra_env}), exempt=("/ping",))
    app.wsgi_app = guard

    assert app.test_client().get("/ping").text == "pong"
    assert app.test_client().get("/other").status_code == 403
    guard.store.close()


def test_the_old_single_origin_value_is_refused_by_name(env: dict) -> None:
    with pytest.raises(ConfigurationError, match="ORIGIN_VERIFY_SECRET_ARN"):
        Settings.from_env({**env, "ORIGIN_VERIFY_SECRET": VERIFY})


def test_an_expired_session_sends_the_dash_page_back_to_login(host, db, session_cookie: str) -> None:
    client, _ = host
    client.set_cookie("__Host-session", session_cookie)
    db.execute("UPDATE public.dashgate_sessions SET expires_at = now() - interval '1 second'")

    assert client.get("/dash/").status_code == 303
    # Dash serves its callbacks at the root (routes_pathname_prefix="/"): protected with the pages
    assert client.post("/_dash-update-component", json={}).status_code == 401


def test_the_guard_installs_without_the_lambda_only_parts(tmp_path: Path) -> None:
    # WHEN the shared/ package is built as the host's `pip install` would build it (from a copy:
    # setuptools leaves build/ and *.egg-info behind)
    source = shutil.copytree(ROOT / "shared", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(source)],
                   check=True, timeout=300, capture_output=True)
    wheel = next(tmp_path.glob("dashgate-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]

    # THEN it carries the guard and the migrations, and needs Powertools only for the [lambda] extra
    assert "dashgate/guard.py" in names and "dashgate/migrations/0001_users_sessions_throttle.sql" in names
    assert any("psycopg" in r for r in requires) and any("itsdangerous" in r for r in requires)
    assert all("extra == \"lambda\"" in r for r in requires if "powertools" in r)
    assert not any("boto3" in r for r in requires)
    imported = subprocess.run([sys.executable, "-c", "import sys, dashgate.guard; "
                               "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                               "('aws_lambda_powertools', 'boto3', 'botocore')))"],
                              cwd=ROOT / "shared", capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "[]"


# -- sign out everywhere ----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["form", "json"])
def test_signing_out_everywhere_ends_the_other_sessions(handlers: dict, alice: dict, db, how: str) -> None:
    laptop, phone = Browser(handlers), Browser(handlers, source_ip="198.51.100.20")
    laptop.submit("/login/", CREDENTIALS)
    phone.submit("/login/", CREDENTIALS)
    phone_cookie = phone.jar["__Host-session"]

    if how == "form":
        token = laptop.csrf_token("/register/")
        response = laptop.post("/logout/", form={"csrf_token": token, "everywhere": "1"},
                               headers={"origin": ORIGIN, "sec-fetch-site": "same-origin"})
    else:
        response = laptop.post("/logout/", json_body={"everywhere": True}, headers={"origin": ORIGIN})

    assert response["statusCode"] == {"form": 303, "json": 204}[how]
    assert db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0] == 0
    still_there = handlers["login"].lambda_handler(
        make_event("GET", "/login/", cookies=[f"__Host-session={phone_cookie}"]), LambdaContext())
    assert still_there["statusCode"] == 200  # the phone is signed out: it sees the form


def test_plain_logout_leaves_other_sessions_alone(handlers: dict, alice: dict, db) -> None:
    laptop, phone = Browser(handlers), Browser(handlers)
    laptop.submit("/login/", CREDENTIALS)
    phone.submit("/login/", CREDENTIALS)

    laptop.get("/logout/")

    assert db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0] == 1


def test_everywhere_with_a_dead_session_revokes_nothing(handlers: dict, alice: dict, db) -> None:
    phone = Browser(handlers)
    phone.submit("/login/", CREDENTIALS)
    forged = make_event("POST", "/logout/", json_body={"everywhere": True}, headers={"origin": ORIGIN},
                        cookies=["__Host-session=not.signed"])

    handlers["logout"].lambda_handler(forged, LambdaContext())

    assert db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0] == 1



