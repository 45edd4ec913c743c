"""Errors: one hierarchy, each class carrying its HTTP status, a stable code and a public message."""

from __future__ import annotations


class ConfigurationError(Exception):
    """A setting is missing or wrong; start-up stops with a message naming the variable."""


class DashgateError(Exception):
    """A request cannot be served as asked; `http` turns it into a response, once."""

    status = 500
    code = "internal_error"
    message = "Something went wrong. Please try again."

    def __init__(self, message: str | None = None) -> None:
        if message is not None:
            self.message = message
        super().__init__(self.message)


class BadRequest(DashgateError):
    status, code, message = 400, "bad_request", "The request could not be read."


class CsrfRejected(DashgateError):
    status, code = 403, "csrf_failed"
    message = "This form has expired or did not come from this site. Please reload the page and try again."


class NotFound(DashgateError):
    status, code, message = 404, "not_found", "There is nothing here."


class MethodNotAllowed(DashgateError):
    """A method the route does not take; `allow` lists the ones it does (RFC 9110 15.5.6)."""

    status, code, message = 405, "method_not_allowed", "This method is not allowed here."

    def __init__(self, allow: str = "GET, POST") -> None:
        super().__init__()
        self.allow = allow


class PayloadTooLarge(DashgateError):
    status, code, message = 413, "payload_too_large", "The request body is larger than 16 KiB."


class UnsupportedMediaType(DashgateError):
    status, code = 415, "unsupported_media_type"
    message = "Send application/x-www-form-urlencoded (a form) or application/json."


class ValidationFailed(DashgateError):
    """Some fields are invalid; `fields` maps each bad field to its message."""

    status, code, message = 422, "validation_error", "Please correct the fields marked below."

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields


class EmailTaken(DashgateError):
    status, code, message = 409, "email_taken", "That email address is already registered"


class InvalidCredentials(DashgateError):
    status, code, message = 401, "invalid_credentials", "Invalid email or password"


class InvalidToken(DashgateError):
    """A reset or confirmation link that is missing, used, expired, forged or for another address."""

    status, code, message = 400, "invalid_token", "This password reset link is invalid or has expired."
    #: The message of a confirmation link that does not work.
    CONFIRMATION = "This confirmation link is invalid or has expired."


class NotSignedIn(DashgateError):
    """A page or action for signed-in users only (change password), asked for without a live session."""

    status, code, message = 401, "not_signed_in", "Please sign in first."


class EmailNotConfirmed(DashgateError):
    """REQUIRE_CONFIRMED_EMAIL: a correct password on an unconfirmed account (a new link was sent)."""

    status, code = 403, "email_not_confirmed"
    message = "Please confirm your email address first. We have sent you a new link."
    #: The account (a store.User), set by Users.authenticate: the login route asks for its new link.
    user: object | None = None


class Throttled(DashgateError):
    """Too many attempts; the caller may try again after `retry_after` seconds."""

    status, code = 429, "too_many_requests"

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class ServiceUnavailable(DashgateError):
    status, code = 503, "service_unavailable"
    message = "The service is temporarily unavailable. Please try again in a moment."
