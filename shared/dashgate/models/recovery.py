"""Account recovery's bodies: forgot, reset, change password, confirm email (SPEC: Account recovery)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from dashgate.models import EMAIL_MESSAGES, PASSWORD_MAX, CsrfToken, EmailText, Submission, TokenText, text
from dashgate.models.password import ConfirmedPassword


class ForgotRequest(Submission):
    """POST /password/forgot/: the address to send a reset link to, if it has an account."""

    email: EmailText = Field(description="Trimmed and lower-cased; every address gets the same answer.")
    csrf_token: str | None = CsrfToken

    messages: ClassVar = {"email": EMAIL_MESSAGES}


class ResetRequest(ConfirmedPassword):
    """POST /password/reset/: the emailed token and the new password. Browsers send no token: theirs is
    in the reset cookie that the link's GET set (the token never sits in a page)."""

    token: TokenText | None = Field(None, description="The token of the emailed link (JSON clients).")
    csrf_token: str | None = CsrfToken


class ChangeRequest(ConfirmedPassword):
    """POST /password/change/ (signed in): the current password and the new one."""

    current_password: text(strip=False, min_length=1, max_length=PASSWORD_MAX) = Field(
        description="The password the account has now.")
    csrf_token: str | None = CsrfToken

    messages: ClassVar = {
        **ConfirmedPassword.messages,
        "current_password": {"missing": "Current password is required.",
                             "string_too_short": "Current password is required.",
                             "string_too_long": "Your current password is incorrect"},
    }


class ConfirmRequest(Submission):
    """POST /email/confirm/: confirm with the emailed token, or (signed in, no token) ask for a new link."""

    token: TokenText | None = Field(None, description="The token of the emailed link; none asks for a new link.")
    csrf_token: str | None = CsrfToken
