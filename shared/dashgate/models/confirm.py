"""POST /email/confirm/: the emailed token, or none to ask for a new link (SPEC: Confirm email)."""

from __future__ import annotations

from pydantic import Field

from dashgate.models import Submission, TokenText


class ConfirmRequest(Submission):
    """POST /email/confirm/: confirm with the emailed token, or (signed in, no token) ask for a new link."""

    token: TokenText | None = Field(None, description="The token of the emailed link; none asks for a new link.")
