"""Pure tests of the edge: `next` redirects, Accept negotiation, cookies, the transport checks and the
request models (strict JSON, forms field by field)."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import pytest
from pydantic import ValidationError as PydanticValidationError

from dashgate.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from dashgate.http import MAX_NEXT_LENGTH, Request, admit, parse_cookies, prefers_json, safe_next
from dashgate.models import JsonObject, json_object
from dashgate.models.login import LoginRequest
from dashgate.settings import MAX_BODY_BYTES
from tests.support import OPEN_REDIRECT_VECTORS, make_event

DEFAULT = "/dash/"

# -- safe_next ------------------------------------------------------------------------------
#: The vectors the handlers' tests use, and more that only safe_next sees.
OPEN_REDIRECTS = [
    *OPEN_REDIRECT_VECTORS,
    "\\/evil.example",
    "/%2f%2fevil.example",
    "%2F%2Fevil.example",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "dash/",
    " /dash/",
    "/dash/%0D%0ASet-Cookie:%20x=1",
    "/\t/evil.example",
    "/\nevil.example",
    "/dash/\x00",
    "/dash/\x7f",
    "/dash/\u2028",
    "/" + "a" * MAX_NEXT_LENGTH,
]


@pytest.mark.parametrize("value", OPEN_REDIRECTS)
def test_safe_next_refuses_anything_but_a_local_path(value: str) -> None:
    assert safe_next(value, DEFAULT) == DEFAULT


@pytest.mark.parametrize("value", [None, 0, 1, b"/dash/", ["/dash/"], {"next": "/dash/"}, True, 1.5])
def test_safe_next_refuses_non_strings(value: object) -> None:
    assert safe_next(value, DEFAULT) == DEFAULT


@pytest.mark.parametrize("value", ["/dash/", "/", "/dash/?a=1&b=2", "/dash/#x", "/dash/reports/2024?tab=q1#top",
                                   "/dash/?q=a%20b", "/dash/page;v=1", "/dash/~user/"])
def test_safe_next_keeps_local_paths(value: str) -> None:
    assert safe_next(value, DEFAULT) == value


def test_safe_next_keeps_a_path_of_the_maximum_length() -> None:
    value = "/" + "a" * (MAX_NEXT_LENGTH - 1)
    assert safe_next(value, DEFAULT) == value


def test_safe_next_falls_back_to_the_given_default() -> None:
    assert safe_next("//evil.example", "/home/") == "/home/"


@pytest.mark.parametrize(("value", "expected"), [
    ("/dash/café", "/dash/caf%C3%A9"),
    ("/dash/日本", "/dash/%E6%97%A5%E6%9C%AC"),
    ("/dash/?q=ü", "/dash/?q=%C3%BC"),
    ("/dash/a b", "/dash/a%20b"),
])
def test_safe_next_percent_encodes_non_ascii(value: str, expected: str) -> None:
    result = safe_next(value, DEFAULT)
    assert result == expected
    assert result.isascii()
    assert "\r" not in result and "\n" not in result


# -- prefers_json ---------------------------------------------------------------------------
@pytest.mark.parametrize(("accept", "expected"), [
    ("application/json", True),
    ("APPLICATION/JSON", True),
    ("application/json; charset=utf-8", True),
    ("application/json, */*", True),
    ("application/json, */*;q=0.1", True),
    ("text/html, application/json;q=0.9", False),
    ("text/html;q=0.5, application/json", True),
    ("application/json;q=0.9, text/html;q=0.8", True),
    ("application/json, text/html", False),  # a tie goes to HTML
    ("text/*, application/json;q=0.5", False),
    ("application/json;q=0", False),
    ("application/json;q=abc", False),
    ("text/html", False),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
    ("*/*", False),
    ("", False),
    (",,;", False),
])
def test_prefers_json(accept: str, expected: bool) -> None:
    assert prefers_json(accept) is expected


# -- parse_cookies --------------------------------------------------------------------------
@pytest.mark.parametrize(("pairs", "expected"), [
    ([], {}),
    (["a=b"], {"a": "b"}),
    (["a=b", "c=d"], {"a": "b", "c": "d"}),
    (["a=b; c=d"], {"a": "b", "c": "d"}),
    (["a=1", "a=2"], {"a": "1"}),  # first wins
    (["a=1; a=2"], {"a": "1"}),
    (['a="quoted"'], {"a": "quoted"}),
    (["a=b=c"], {"a": "b=c"}),
    (["a="], {"a": ""}),
    (["novalue", "=nameless", ";;", ""], {}),
    (["__Host-session=x.y; __Host-csrf=z"], {"__Host-session": "x.y", "__Host-csrf": "z"}),
])
def test_parse_cookies(pairs: list[str], expected: dict[str, str]) -> None:
    assert parse_cookies(pairs) == expected


def test_parse_cookies_reads_non_string_entries_as_text() -> None:
    assert parse_cookies([123, None]) == {}  # type: ignore[list-item]


# -- Request.from_event, admit() and the body parser -------------------------------------------------
def request(**kwargs) -> Request:
    return Request.from_event(make_event("POST", "/login/", **kwargs))


def raw_event(body: str, *, is_base64: bool, content_type: str) -> dict:
    event = make_event("POST", "/login/", content_type=content_type)
    event["body"], event["isBase64Encoded"] = body, is_base64
    return event


def test_from_event_reads_the_parts_dashgate_uses() -> None:
    req = request(form={"a": "1"}, cookies=["x=1; y=2"], query="next=%2Fdash%2F&n=1&n=2", source_ip="198.51.100.7",
                  headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert req.method == "POST"
    assert req.path == "/login/"
    assert req.cookies == {"x": "1", "y": "2"}
    assert req.query == {"next": "/dash/", "n": "1"}
    assert req.source_ip == "198.51.100.7"
    assert req.content_type == "application/x-www-form-urlencoded"
    assert req.is_base64 is True


@pytest.mark.parametrize("event", [{}, {"headers": None, "cookies": None, "requestContext": None, "body": None}])
def test_from_event_reads_a_malformed_event_as_empty(event: dict) -> None:
    req = Request.from_event(event)
    assert req.method == "GET"
    assert req.cookies == {} and req.query == {} and req.raw_body == ""


def admitted(**kwargs) -> dict:
    """The event the resolver gets after the transport checks."""
    return admit(make_event("POST", "/login/", **kwargs))


def parsed(**kwargs) -> dict:
    """The body as Powertools hands it to a model: a JSON object by our parser, a form as lists."""
    event = admitted(**kwargs)
    if event["headers"].get("content-type") == "application/json":
        return json_object(event["body"])
    return parse_qs(event["body"] or "", keep_blank_values=True)


def test_admit_passes_a_base64_form_on_as_text() -> None:
    event = admitted(form={"email": "a@example.com", "password": "p&ss=wörd", "empty": ""})
    assert event["isBase64Encoded"] is False
    assert parse_qs(event["body"], keep_blank_values=True) == {
        "email": ["a@example.com"], "password": ["p&ss=wörd"], "empty": [""]}


def test_admit_reads_a_plain_text_form() -> None:
    assert parsed(form={"email": "a@example.com"}, base64_body=False) == {"email": ["a@example.com"]}


def test_a_json_object_is_read_as_one() -> None:
    data = parsed(json_body={"email": "a@example.com", "remember_me": True})
    assert data == {"email": "a@example.com", "remember_me": True} and isinstance(data, JsonObject)


def test_admit_accepts_json_with_a_charset_and_passes_the_bare_media_type() -> None:
    event = admitted(json_body={"a": "b"}, content_type="application/json; charset=utf-8")
    assert event["headers"]["content-type"] == "application/json"
    assert json_object(event["body"]) == {"a": "b"}


@pytest.mark.parametrize("body", ["!!!not base64!!!", "YWJj\n", "YWJ", "YW=j", "Zm9v YmFy", "é"])
def test_admit_refuses_invalid_base64(body: str) -> None:
    with pytest.raises(BadRequest):
        admit(raw_event(body, is_base64=True, content_type="application/x-www-form-urlencoded"))


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "application/json"])
@pytest.mark.parametrize("raw", [b"\xff\xfe", b"email=\xc3", b'{"email": "\xed\xa0\x80"}', b"\xc0\xaf"])
def test_admit_refuses_invalid_utf8(raw: bytes, content_type: str) -> None:
    with pytest.raises(BadRequest):
        admit(raw_event(base64.b64encode(raw).decode(), is_base64=True, content_type=content_type))


def test_admit_refuses_a_lone_surrogate_in_a_text_body() -> None:
    with pytest.raises(BadRequest):
        admitted(body='{"email": "\ud800"}', content_type="application/json", base64_body=False)


def test_admit_refuses_percent_encoded_invalid_utf8_in_a_form() -> None:
    with pytest.raises(BadRequest):
        admitted(body="email=%ff%fe", content_type="application/x-www-form-urlencoded")


@pytest.mark.parametrize("base64_body", [True, False])
def test_admit_accepts_a_body_of_exactly_16_kib(base64_body: bool) -> None:
    body = "a=" + "x" * (MAX_BODY_BYTES - 2)
    assert parsed(body=body, content_type="application/x-www-form-urlencoded", base64_body=base64_body) == {
        "a": ["x" * (MAX_BODY_BYTES - 2)]}


@pytest.mark.parametrize("base64_body", [True, False])
@pytest.mark.parametrize("size", [MAX_BODY_BYTES + 1, MAX_BODY_BYTES * 4, 1024 * 1024])
def test_admit_refuses_a_body_over_16_kib(base64_body: bool, size: int) -> None:
    body = "a=" + "x" * (size - 2)
    with pytest.raises(PayloadTooLarge):
        admitted(body=body, content_type="application/x-www-form-urlencoded", base64_body=base64_body)


@pytest.mark.parametrize("base64_body", [True, False])
def test_admit_refuses_a_json_body_over_16_kib(base64_body: bool) -> None:
    body = json.dumps({"email": "a@example.com", "padding": "x" * MAX_BODY_BYTES})
    with pytest.raises(PayloadTooLarge):
        admitted(body=body, content_type="application/json", base64_body=base64_body)


def test_admit_refuses_multibyte_text_over_16_kib_once_encoded() -> None:
    body = "a=" + "é" * (MAX_BODY_BYTES // 2)  # fewer than 16 Ki characters, more than 16 KiB
    with pytest.raises(PayloadTooLarge):
        admitted(body=body, content_type="application/x-www-form-urlencoded", base64_body=False)


@pytest.mark.parametrize("content_type", ["text/plain", "text/plain; charset=utf-8", "multipart/form-data; boundary=x",
                                          "application/xml", "application/jsonx", "text/json", None])
def test_admit_refuses_other_media_types(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        admitted(body='{"email": "a@example.com"}', content_type=content_type, base64_body=False)


@pytest.mark.parametrize("body", [
    "{", "{'email': 'a'}", '{"email": }', "   ", "nul", '{"a": 1,}', '{"a": 1} trailing',
    "[]", "[1, 2]", '"a string"', "42", "null", "true", "NaN",
])
def test_json_that_is_not_an_object_is_refused(body: str) -> None:
    with pytest.raises(BadRequest):
        parsed(body=body, content_type="application/json", base64_body=False)


def test_a_duplicate_json_key_is_a_validation_error_naming_it() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parsed(body='{"email": "a@example.com", "password": "x", "email": "b@example.com"}',
               content_type="application/json", base64_body=False)
    assert caught.value.fields == {"email": "Send each field once."}


def test_a_repeated_form_field_is_a_validation_error_naming_it() -> None:
    data = parsed(body="email=a%40example.com&password=x&email=b%40example.com",
                  content_type="application/x-www-form-urlencoded")
    with pytest.raises(PydanticValidationError) as caught:
        LoginRequest.model_validate(data)
    assert LoginRequest.fields_of(caught.value.errors()) == {"email": "Send this field once."}


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded", None])
def test_an_empty_body_passes_and_reads_as_no_fields(content_type) -> None:
    event = admitted(body="", content_type=content_type, base64_body=False)
    assert not event["body"]
    assert event["headers"].get("content-type") in ("application/json", "application/x-www-form-urlencoded", None)


@pytest.mark.parametrize("body", [
    "[" * 15000,
    "[" * 15000 + "]" * 1000,
    '{"email": ' + "[" * 15000,
    '{"a":' * 3200,
    '{"email": ' + "[" * 12000 + "]" * 4000 + "}",
])
@pytest.mark.parametrize("base64_body", [True, False])
def test_deeply_nested_json_is_refused_without_recursion_error(body: str, base64_body: bool) -> None:
    assert len(body.encode()) <= MAX_BODY_BYTES
    with pytest.raises(BadRequest):
        parsed(body=body, content_type="application/json", base64_body=base64_body)


@pytest.mark.parametrize("depth", [1000, 2000, 8000])
def test_well_formed_deep_json_is_read_as_an_object_or_refused(depth: int) -> None:
    body = '{"email": ' + "[" * depth + "]" * depth + ', "password": "x"}'
    assert len(body.encode()) <= MAX_BODY_BYTES
    try:
        data = parsed(body=body, content_type="application/json", base64_body=False)
    except BadRequest:
        return  # the parser may manage this depth; then the field is simply not a string
    with pytest.raises(PydanticValidationError):
        LoginRequest.model_validate(data)


# -- the models: strict JSON, forms field by field ------------------------------------------------
def login_fields(data: dict) -> dict[str, str]:
    try:
        LoginRequest.model_validate(data)
    except PydanticValidationError as err:
        return LoginRequest.fields_of(err.errors())
    return {}


@pytest.mark.parametrize("value", [123, 1.5, True, False, [], ["a@example.com"], {}, {"a": "b"}])
def test_a_json_email_that_is_not_a_string_is_refused(value: object) -> None:
    assert set(login_fields(JsonObject(email=value, password="x"))) == {"email"}


@pytest.mark.parametrize("value", [1, 0, "yes", "true", "y", None, [], {}])
def test_a_json_checkbox_must_be_a_boolean_never_coerced(value: object) -> None:
    assert login_fields(JsonObject(email="a@example.com", password="x", remember_me=value)) == {
        "remember_me": "Must be true or false."}


@pytest.mark.parametrize(("sent", "expected"), [("y", True), ("1", True), ("on", True), ("true", True),
                                                ("", False), ("no", False)])
def test_a_form_checkbox_reads_as_a_boolean(sent: str, expected: bool) -> None:
    model = LoginRequest.model_validate({"email": ["a@example.com"], "password": ["x"], "remember_me": [sent]})
    assert model.remember_me is expected


@pytest.mark.parametrize("value", ["\ud800", "abc\udfff", "\udc00\ud800"])
def test_lone_surrogates_are_refused(value: str) -> None:
    assert set(login_fields(JsonObject(email=value, password="x"))) == {"email"}


def test_a_lone_surrogate_from_a_json_escape_is_refused() -> None:
    data = parsed(body='{"email": "\\ud800@example.com", "password": "x"}', content_type="application/json",
                  base64_body=False)
    assert set(login_fields(data)) == {"email"}


def test_strings_are_read_trimmed_except_the_password() -> None:
    model = LoginRequest.model_validate(JsonObject(email="  A@Example.COM  ", password="  x  "))
    assert model.email == "a@example.com" and model.password == "  x  "
    assert LoginRequest.model_validate(JsonObject(email="\U0001f600@example.com", password="x")).email[0] == \
        "\U0001f600"  # a proper surrogate pair decoded from JSON is fine


def test_a_dict_built_in_code_is_validated_strictly_not_read_as_a_form() -> None:
    # Only a parsed form (lists of strings) gets form semantics; a plain dict is held to the JSON rules.
    assert login_fields({"email": "a@example.com", "password": "x", "remember_me": 997}) == {
        "remember_me": "Must be true or false."}
    assert LoginRequest.model_validate({"email": "a@example.com", "password": "x"}).remember_me is False
