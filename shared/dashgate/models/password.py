"""A new password and its confirmation: registration, reset and change all take one."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from dashgate.models import PASSWORD_MAX, PASSWORD_MIN, NewPassword, Submission


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
