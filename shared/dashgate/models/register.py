"""The registration body: the one place an address's syntax is checked, with email_validator. It is
imported at the first address it checks, not with the function: its import (about 25 ms, mostly
compiling its RFC regular expressions) is then paid by the first POST of an execution environment,
never by a GET of the form; with SnapStart the before-snapshot hook imports it, so no request pays."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from dashgate import snapstart
from dashgate.models import EMAIL_MAX, NAME_MAX, NameText, text
from dashgate.models.password import ConfirmedPassword


def deliverable_syntax(value: str) -> str:
    """An address in the syntax mail servers accept (no DNS lookup): `a@b` and `not-an-email` are not."""
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        raise PydanticCustomError("email", "Enter a valid email address.") from None
    return value


def _import_validator() -> None:
    import email_validator  # noqa: F401 - loaded into the snapshot


snapstart.register_hooks(_import_validator, lambda: None)

EmailAddress = Annotated[
    text(lower=True, max_length=EMAIL_MAX), AfterValidator(deliverable_syntax),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": EMAIL_MAX}),
]


class RegisterRequest(ConfirmedPassword):
    """POST /register/: a new account, with a new password and its confirmation (ConfirmedPassword:
    browsers always confirm; a JSON body may, and then the same rule holds)."""

    email: EmailAddress = Field(description="Trimmed and lower-cased before anything else; unique in any case.")
    first_name: NameText
    last_name: NameText

    messages: ClassVar = {
        **ConfirmedPassword.messages,
        "email": {"string_too_long": f"Email must be at most {EMAIL_MAX} characters.",
                  "*": "Enter a valid email address."},
        "first_name": {"missing": "First name is required.", "string_too_short": "First name is required.",
                       "string_too_long": f"First name must be at most {NAME_MAX} characters.",
                       "*": "First name must not contain control characters."},
        "last_name": {"missing": "Last name is required.", "string_too_short": "Last name is required.",
                      "string_too_long": f"Last name must be at most {NAME_MAX} characters.",
                      "*": "Last name must not contain control characters."},
    }
