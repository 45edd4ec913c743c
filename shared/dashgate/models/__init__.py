"""Models: the request and response bodies of the HTTP API, as pydantic models with the SPEC's limits.

One model per request body serves both encodings. A JSON object is validated strictly: a wrong type
is refused, never coerced (`"everywhere": 997` is not a boolean). A form is first read into the same
shape (`Submission.from_form`): Powertools parses it into lists of strings; each field must come at
most once, and a checkbox reads as a boolean. The published schema (openapi.json) is generated from
these classes, so what is documented is what is enforced.

This module holds what every function shares (the base classes, the field types, the user, the
errors); each function's own bodies are in a module of its name (`models.login`,
`models.register`...), so a function builds only the models it serves: creating a pydantic model class
costs about 1.5 ms of a cold start.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from dashgate.errors import BadRequest, ValidationFailed
from dashgate.settings import TOKEN_MAX

EMAIL_MAX = 254  # RFC 5321 path limit
PASSWORD_MIN, PASSWORD_MAX = 8, 256
NAME_MAX = 100
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
    #: Every form carries its CSRF token (SPEC: CSRF and redirects); JSON bodies need none.
    csrf_token: str | None = Field(None, description="The form's CSRF token (browser forms only).")
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
#: An address as typed, trimmed and lower-cased; its syntax is checked only at registration (models.register).
EmailText = text(lower=True, min_length=1, max_length=EMAIL_MAX, visible=True)
NewPassword = text(strip=False, min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)
TokenText = text(min_length=1, max_length=TOKEN_MAX, visible=True)
EMAIL_MESSAGES = {"missing": "Email is required.", "string_too_short": "Email is required.",
                  "*": "Enter a valid email address."}


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


class FieldsOut(Reply):
    """A form's GET as JSON (account recovery): the fields its POST takes."""

    fields: list[str]


class MessageOut(Reply):
    """202: accepted, and what happens next (the same text whatever the address)."""

    message: str


class ErrorOut(Reply):
    """Every JSON error: a stable code and a message for people."""

    error: str
    message: str


class ValidationErrorOut(ErrorOut):
    """422: the message next to each bad field."""

    fields: dict[str, str]
