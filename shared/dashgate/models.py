"""Models: the request and response bodies of the HTTP API, as pydantic models with the SPEC's limits.

One model per request body serves both encodings. A JSON object is validated strictly: a wrong type
is refused, never coerced (`"everywhere": 997` is not a boolean). A form is first read into the same
shape (`Submission.from_form`): Powertools parses it into lists of strings; each field must come at
most once, and a checkbox reads as a boolean. The published schema (openapi.json) is generated from
these classes, so what is documented is what is enforced.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from dashgate.errors import BadRequest, ValidationFailed

EMAIL_MAX = 254  # RFC 5321 path limit
PASSWORD_MIN, PASSWORD_MAX = 8, 256
NAME_MAX = 100
#: A reset or confirmation token as we issue it is 43 characters (32 bytes, base64url); longer is not ours.
TOKEN_MAX = 128
#: A name or an address is one line of visible text: no C0/C1 control characters, no line or
#: paragraph separators, no bidi overrides or zero-width characters that could disguise it.
VISIBLE_TEXT = r"^[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]*$"
#: Values of a checked checkbox (`remember_me=y`, `everywhere=1`); JSON sends true or false.
CHECKED = frozenset({"1", "y", "yes", "on", "true"})


class JsonObject(dict):
    """A JSON object as `json_object` read it: how a model tells a JSON body from a parsed form."""


def json_object(text: str | None) -> JsonObject:
    """The resolver's JSON body parser: an object with each key at most once (one parser, one answer:
    a duplicate key is a 422, never "the last one wins"); anything else is a 400."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> JsonObject:
        value = JsonObject()
        for key, item in pairs:
            if key in value:
                raise ValidationFailed({key: "Send each field once."})
            value[key] = item
        return value

    try:
        data = json.loads(text or "{}", object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError):
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(data, JsonObject):
        raise BadRequest("The JSON body must be an object.")
    return data


class Submission(BaseModel):
    """A request body: strict for JSON, read field by field from a form. `messages` gives each field's
    wording for a pydantic error type; `fields_of` turns pydantic's errors into the SPEC's `fields`."""

    model_config = ConfigDict(strict=True, extra="ignore")
    #: field -> pydantic error type (or "*") -> the message shown next to that field.
    messages: ClassVar[dict[str, dict[str, str]]] = {}
    #: Checkbox fields: in a form, present with a checked value means true, absent means false.
    checkboxes: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def from_form(cls, data: Any) -> Any:
        """A parsed form (every value a list of strings, as Powertools hands it over) into field values;
        anything else (a JSON object, a dict built in code) is validated as it is, strictly."""
        if isinstance(data, JsonObject) or not isinstance(data, dict) or \
                not all(isinstance(sent, list) for sent in data.values()):
            return data
        values: dict[str, Any] = {}
        for name, sent in data.items():
            if len(sent) > 1:
                raise PydanticCustomError("repeated_field", "Send the field {name} once.", {"name": name})
            values[name] = sent[0]
        for name in cls.checkboxes:
            values[name] = str(values.get(name, "")).strip().lower() in CHECKED
        return cls.read_form(values)

    @classmethod
    def read_form(cls, values: dict[str, Any]) -> dict[str, Any]:
        """What a form means beyond its fields (a model may override it)."""
        return values

    @classmethod
    def fields_of(cls, errors: list[dict[str, Any]]) -> dict[str, str]:
        """pydantic's errors as {field: message}, one message per field, in our wording."""
        fields: dict[str, str] = {}
        for error in errors:
            loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query")]
            kind = str(error.get("type", ""))
            if kind == "repeated_field":
                name = str(error.get("ctx", {}).get("name", "body"))
                fields.setdefault(name, "Send this field once.")
                continue
            name = loc[0] if loc else "body"
            if error.get("loc", ("",))[0] == "query" and isinstance(error.get("input"), list):
                fields.setdefault(name, "Send this field once.")  # a query parameter given twice
                continue
            wording = cls.messages.get(name, {})
            fields.setdefault(name, wording.get(kind) or wording.get("*") or GENERIC.get(kind, INVALID))
        return fields


INVALID = "This value is not valid."
#: Messages for pydantic's error types when a field has none of its own.
GENERIC = {
    "missing": "This field is required.",
    "string_type": "Must be a string.",
    "string_unicode": "Must be valid Unicode text.",
    "bool_type": "Must be true or false.",
    "model_attributes_type": "Send a form or a JSON object.",
}


def text(*, strip: bool = True, lower: bool = False, min_length: int = 0, max_length: int,
         visible: bool = False) -> Any:
    """A string field with its limits, enforced by pydantic and published in the schema as they are."""
    return Annotated[str, StringConstraints(strip_whitespace=strip, to_lower=lower, min_length=min_length,
                                            max_length=max_length, pattern=VISIBLE_TEXT if visible else None)]


NameText = text(min_length=1, max_length=NAME_MAX, visible=True)
#: An address as typed, trimmed and lower-cased; its syntax is checked only at registration (signup).
EmailText = text(lower=True, min_length=1, max_length=EMAIL_MAX, visible=True)
NewPassword = text(strip=False, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
TokenText = text(min_length=1, max_length=TOKEN_MAX, visible=True)
CsrfToken = Field(None, description="The form's CSRF token (browser forms only).")
EMAIL_MESSAGES = {"missing": "Email is required.", "string_too_short": "Email is required.",
                  "*": "Enter a valid email address."}


class LoginRequest(Submission):
    """POST /login/: the credentials, and where to go next (browsers send `next` and `csrf_token`)."""

    email: EmailText = Field(description="The account's address; trimmed and lower-cased (any letter case signs in).")
    password: text(strip=False, min_length=1, max_length=PASSWORD_MAX) = Field(
        description="Checked exactly as sent.")
    remember_me: bool = Field(False, description="Keep the session for SESSION_REMEMBER_DAYS.")
    next: str | None = Field(None, description="A local path to go to after signing in (browsers).")
    csrf_token: str | None = Field(None, description="The form's CSRF token (browser forms only).")

    checkboxes: ClassVar = ("remember_me",)
    messages: ClassVar = {
        "email": EMAIL_MESSAGES,
        "password": {"missing": "Password is required.", "string_too_short": "Password is required.",
                     "string_too_long": f"Password must be at most {PASSWORD_MAX} characters."},
    }


class LogoutRequest(Submission):
    """POST /logout/: sign out this session, or every session of the user."""

    everywhere: bool = Field(False, description="Also revoke the user's other sessions.")
    csrf_token: str | None = Field(None, description="The form's CSRF token (browser forms only).")

    checkboxes: ClassVar = ("everywhere",)


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


# -- responses ----------------------------------------------------------------------------------------
class Reply(BaseModel):
    """A JSON response body."""

    def body(self) -> str:
        """Compact JSON, as sent."""
        return self.model_dump_json()


class UserOut(Reply):
    """The SPEC's `user` object."""

    id: int
    email: str
    first_name: str | None
    last_name: str | None
    created_at: str = Field(description="ISO 8601, UTC.")
    email_confirmed: bool = Field(description="The address has been confirmed (an emailed link, or a reset).")


class SignedInOut(Reply):
    """POST /login/ (200) and POST /register/ (201): the user."""

    user: UserOut


class SessionOut(Reply):
    """GET /login/ as JSON: the signed-in user, or null."""

    user: UserOut | None


class RegisterFieldsOut(Reply):
    """GET /register/ as JSON: the fields POST /register/ takes."""

    fields: list[str]


class FieldsOut(Reply):
    """A form's GET as JSON (account recovery): the fields its POST takes."""

    fields: list[str]


class MessageOut(Reply):
    """202: accepted, and what happens next (the same text whatever the address)."""

    message: str


class LogoutNoticeOut(Reply):
    """A GET /logout/ that may not sign out (another site's, or a background fetch): how to do it."""

    logged_out: bool
    message: str


class DatabaseOut(Reply):
    ok: bool
    latency_ms: float | None = None


class HealthOut(Reply):
    """GET /healthcheck/ as JSON."""

    status: str = Field(description='"ok" or "unavailable".')
    database: DatabaseOut
    message: str | None = None


class ErrorOut(Reply):
    """Every JSON error: a stable code and a message for people."""

    error: str
    message: str


class ValidationErrorOut(ErrorOut):
    """422: the message next to each bad field."""

    fields: dict[str, str]
