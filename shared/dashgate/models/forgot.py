"""POST /password/forgot/: the address to send a reset link to (SPEC: Forgot password)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from dashgate.models import EMAIL_MESSAGES, EmailText, Submission


class ForgotRequest(Submission):
    """POST /password/forgot/: the address to send a reset link to, if it has an account."""

    email: EmailText = Field(description="Trimmed and lower-cased; every address gets the same answer.")

    messages: ClassVar = {"email": EMAIL_MESSAGES}
