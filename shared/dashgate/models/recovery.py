"""Account recovery's bodies: forgot, reset, change password, confirm email (SPEC: Account recovery)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from dashgate.models import (
    EMAIL_MESSAGES,
    PASSWORD_MAX,
    PASSWORD_MIN,
    CsrfToken,
    EmailText,
    NewPassword,
    Submission,
    TokenText,
    text,
)


class ConfirmedPassword(Submission):
    """A new password and its confirmation. Browser forms always send `password_confirm`, which must equal
    `password`; a JSON body may send it too, and then the same rule holds (it is left out of the schema:
    JSON Schema cannot say "equal to another field")."""

    password: NewPassword = Field(description=f"The new password, {PASSWORD_MIN} to {PASSWORD_MAX} characters.")
    password_confirm: SkipJsonSchema[str | None] = None

    messages: ClassVar = {
        "password": {"*": f"Password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long."},
        "password_confirm": {"*": "Passwords must match."},
    }

    @classmethod
    def read_form(cls, values: dict[str, Any]) -> dict[str, Any]:
        """A browser always confirms the password: absent reads as empty."""
        values.setdefault("password_confirm", "")
        return values

    @field_validator("password_confirm")
    @classmethod
    def matches(cls, value: str | None, info: ValidationInfo) -> str | None:
        """When sent, the confirmation equals the password."""
        if value is not None and value != info.data.get("password", value):
            raise PydanticCustomError("password_mismatch", "Passwords must match.")
        return value


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
