"""The seed's whole journey, and a forgotten password reset by mail, in a real browser (Debian's chromium,
driven by Playwright) against `make run`."""

from __future__ import annotations

import shutil
import time
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
#: The reset link in a mail at /_outbox/.
RESET_LINK = 'a[href*="/password/reset/?token="]'


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


def open_mail(page, local, subject: str, to: str):
    """Open /_outbox/ until the mail shows up (the local mailer takes it off the spool within a second),
    then the page of the newest mail with that subject and recipient."""
    deadline = time.monotonic() + 20
    while True:
        page.goto(f"{local.url}/_outbox/")
        mail = page.locator("article").filter(has_text=subject).filter(has_text=to)
        if mail.count() or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    mail.first.get_by_role("link", name=subject).click()
    return page


def test_forgot_password_reset_by_mail_and_log_in_with_the_new_one(chromium, start_server, database_url: str,
                                                                   db) -> None:
    local = start_server(DATABASE_URL=database_url)
    old, new = "correct horse battery", "a brand new passphrase"
    # GIVEN Jane, registered, and signed in on another device (a second browser context)
    other = chromium.new_context()
    elsewhere = other.new_page()
    elsewhere.goto(f"{local.url}/register/")
    for label, value in (("Email", "jane@example.com"), ("First name", "Jane"), ("Last name", "Doe"),
                         ("Password", old), ("Repeat password", old)):
        elsewhere.get_by_label(label, exact=True).fill(value)
    elsewhere.get_by_role("button", name="Register").click()
    elsewhere.get_by_label("Email").fill("jane@example.com")
    elsewhere.get_by_label("Password").fill(old)
    elsewhere.get_by_role("button", name="Log in").click()
    assert elsewhere.url == f"{local.url}/dash/"

    # WHEN she forgets her password on this device and asks for a link from the login page
    context = chromium.new_context(viewport={"width": 390, "height": 780})
    page = context.new_page()
    page.goto(f"{local.url}/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    assert page.url == f"{local.url}/password/forgot/"
    page.get_by_label("Email").fill("Jane@Example.com")
    page.get_by_role("button", name="Send me a link").click()
    assert page.url == f"{local.url}/login/"
    assert page.get_by_role("status").inner_text() == (
        "If that email address has an account, we have sent it a link to reset the password.")
    shot(page, "forgot-flash-phone")

    # THEN the mail is in the outbox; its link leads to a page whose address carries no token
    open_mail(page, local, "Reset your password", "jane@example.com")
    shot(page, "reset-mail-phone")
    page.locator(RESET_LINK).click()
    assert page.url == f"{local.url}/password/reset/"
    shot(page, "reset-form-phone")

    # WHEN she chooses a new password (a mistake first: the two differ)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("Repeat new password").fill("something else")
    page.get_by_role("button", name="Reset my password").click()
    assert page.locator("#password_confirm-error").inner_text() == "Passwords must match."
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("Repeat new password").fill(new)
    page.get_by_role("button", name="Reset my password").click()

    # THEN she is asked to log in; the old password no longer works, the new one does
    assert page.url == f"{local.url}/login/"
    assert page.get_by_role("status").inner_text() == "Your password has been reset. You may now login."
    page.get_by_label("Email").fill("jane@example.com")
    page.get_by_label("Password").fill(old)
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "Invalid email or password"
    page.get_by_label("Password").fill(new)
    page.get_by_role("button", name="Log in").click()
    assert page.url == f"{local.url}/dash/" and "Hello, Jane!" in page.inner_text("main")
    # AND the other device was signed out, and the link is used up
    elsewhere.goto(f"{local.url}/dash/")
    assert elsewhere.url == f"{local.url}/login/?next=%2Fdash%2F"
    open_mail(page, local, "Reset your password", "jane@example.com")
    page.locator(RESET_LINK).click()
    assert "This password reset link is invalid or has expired." in page.inner_text("main")
    shot(page, "reset-link-used-phone")
    context.close()
    other.close()


def test_the_confirmation_link_asks_for_a_click_then_confirms(chromium, start_server, database_url: str, db) -> None:
    local = start_server(DATABASE_URL=database_url)
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{local.url}/register/")
    for label, value in (("Email", "sam@example.com"), ("First name", "Sam"), ("Last name", "Lee"),
                         ("Password", "correct horse battery"), ("Repeat password", "correct horse battery")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Register").click()

    # WHEN Sam follows the link in the mail: a button, and nothing confirmed yet
    open_mail(page, local, "Confirm your email address", "sam@example.com")
    page.locator('a[href*="/email/confirm/?token="]').click()
    assert page.get_by_role("button", name="Confirm my email address").is_visible()
    assert db.execute("SELECT email_confirmed_at FROM public.users").fetchone()[0] is None
    shot(page, "confirm-button-desktop")

    # THEN the button confirms (its page sends no Referer, so the post carries `Origin: null`)
    page.get_by_role("button", name="Confirm my email address").click()
    assert page.url == f"{local.url}/login/"
    assert page.get_by_role("status").inner_text() == "Thank you, your email address is confirmed."
    assert db.execute("SELECT email_confirmed_at FROM public.users").fetchone()[0] is not None
    page.close()
