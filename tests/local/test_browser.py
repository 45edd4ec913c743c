"""The seed's whole journey in a real browser (Debian's chromium, driven by Playwright) against `make run`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.support import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Headless, offline: no background networking or component updates on this closed network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]
SCREENSHOTS = ROOT / ".local" / "screenshots"


@pytest.fixture(scope="module")
def chromium():
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make test` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_register_login_remember_me_dash_and_logout(chromium, start_server, database_url: str, db) -> None:
    local = start_server(DATABASE_URL=database_url)
    context = chromium.new_context(viewport={"width": 390, "height": 780})  # a phone-sized screen
    page = context.new_page()

    # GIVEN the registration form, with a mistake first: the error shows next to its field
    page.goto(f"{local.url}/register/")
    page.get_by_label("Email").fill("jane@example")
    page.get_by_label("First name").fill("Jane")
    page.get_by_label("Last name").fill("Doe")
    page.get_by_label("Password", exact=True).fill("correct horse battery")
    page.get_by_label("Repeat password").fill("correct horse battery")
    page.get_by_role("button", name="Register").click()
    assert page.locator("#email-error").inner_text() == "Enter a valid email address."
    shot(page, "register-error-phone")

    # WHEN she corrects it and registers
    page.get_by_label("Email").fill("Jane@Example.com")
    page.get_by_label("Password", exact=True).fill("correct horse battery")
    page.get_by_label("Repeat password").fill("correct horse battery")
    page.get_by_role("button", name="Register").click()

    # THEN the login page shows the flash once
    assert page.url == f"{local.url}/login/"
    assert page.get_by_role("status").inner_text() == "You have successfully registered! You may now login."
    shot(page, "login-flash-phone")

    # WHEN she signs in with "remember me"
    page.get_by_label("Email").fill("jane@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Remember me").check()
    page.get_by_role("button", name="Log in").click()

    # THEN she lands on /dash/, greeted by first name, with a persistent cookie
    assert page.url == f"{local.url}/dash/"
    assert "Hello, Jane!" in page.inner_text("main")
    session = next(c for c in context.cookies() if c["name"] == "session")
    assert session["expires"] > 0 and session["httpOnly"] and session["sameSite"] == "Lax"
    shot(page, "dash-phone")
    assert db.execute("SELECT login_count FROM public.users").fetchone()[0] == 1

    # WHEN she logs out, /dash/ is closed again
    page.get_by_role("link", name="Log out").click()
    assert page.url == f"{local.url}/"
    page.goto(f"{local.url}/dash/")
    assert page.url == f"{local.url}/login/?next=%2Fdash%2F"
    assert db.execute("SELECT count(*) FROM public.dashgate_sessions WHERE revoked_at IS NULL").fetchone()[0] == 0
    context.close()


def test_the_login_page_on_a_desktop(chromium, start_server, database_url: str) -> None:
    local = start_server(DATABASE_URL=database_url)
    page = chromium.new_page(viewport={"width": 1280, "height": 800})

    page.goto(f"{local.url}/login/")
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()

    assert page.get_by_role("alert").inner_text() == "Invalid email or password"
    shot(page, "login-error-desktop")
    page.close()
