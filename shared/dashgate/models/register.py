"""The registration body: the one place an address's syntax is checked, with email_validator. It is
imported at the first address it checks, not with the function: its import (about 25 ms, mostly
compiling its RFC regular expressions) is then paid by the first POST of an execution environment,
never by a GET of the form; with SnapStart the before-snapshot hook imports it, so no request pays."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, ValidationInfo, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from dashgate import snapstart
from dashgate.models import EMAIL_MAX, NAME_MAX, PASSWORD_MAX, PASSWORD_MIN, NameText, Submission, text


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


class RegisterRequest(Submission):
    """POST /register/: a new account. Browser forms also send `password_confirm`, which must equal
    `password`; a JSON body may send it too, and then the same rule holds (it is left out of the
    schema: JSON Schema cannot say "equal to another field", so a fuzzer would send two passwords)."""

    email: EmailAddress = Field(description="Trimmed and lower-cased before anything else; unique in any case.")
    password: text(strip=False, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
    password_confirm: SkipJsonSchema[str | None] = None
    first_name: NameText
    last_name: NameText
    csrf_token: str | None = Field(None, description="The form's CSRF token (browser forms only).")

    messages: ClassVar = {
        "email": {"string_too_long": f"Email must be at most {EMAIL_MAX} characters.",
                  "*": "Enter a valid email address."},
        "password": {"*": f"Password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long."},
        "password_confirm": {"*": "Passwords must match."},
        "first_name": {"missing": "First name is required.", "string_too_short": "First name is required.",
                       "string_too_long": f"First name must be at most {NAME_MAX} characters.",
                       "*": "First name must not contain control characters."},
        "last_name": {"missing": "Last name is required.", "string_too_short": "Last name is required.",
                      "string_too_long": f"Last name must be at most {NAME_MAX} characters.",
                      "*": "Last name must not contain control characters."},
    }

    @classmethod
    def read_form(cls, values: dict[str, Any]) -> dict[str, Any]:
        """A browser always confirms the password (SPEC: POST /register/): absent reads as empty."""
        values.setdefault("password_confirm", "")
        return values

    @field_validator("password_confirm")
    @classmethod
    def matches(cls, value: str | None, info: ValidationInfo) -> str | None:
        """When sent, the confirmation equals the password."""
        if value is not None and value != info.data.get("password", value):
            raise PydanticCustomError("password_mismatch", "Passwords must match.")
        return value
