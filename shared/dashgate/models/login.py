"""POST and GET /login/: the credentials, and the signed-in user."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from dashgate.models import EMAIL_MESSAGES, PASSWORD_MAX, EmailText, Reply, Submission, UserOut, text


class LoginRequest(Submission):
    """POST /login/: the credentials, and where to go next (browsers send `next` and `csrf_token`)."""

    email: EmailText = Field(description="The account's address; trimmed and lower-cased (any letter case signs in).")
    password: text(strip=False, min_length=1, max_length=PASSWORD_MAX) = Field(
        description="Checked exactly as sent.")
    remember_me: bool = Field(False, description="Keep the session for SESSION_REMEMBER_DAYS.")
    next: str | None = Field(None, description="A local path to go to after signing in (browsers).")

    checkboxes: ClassVar = ("remember_me",)
    messages: ClassVar = {
        "email": EMAIL_MESSAGES,
        "password": {"missing": "Password is required.", "string_too_short": "Password is required.",
                     "string_too_long": f"Password must be at most {PASSWORD_MAX} characters."},
    }


class SessionOut(Reply):
    """GET /login/ as JSON: the signed-in user, or null."""

    user: UserOut | None
