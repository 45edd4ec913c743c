"""POST /password/reset/: the emailed token and the new password (SPEC: Reset password)."""

from __future__ import annotations

from pydantic import Field

from dashgate.models import TokenText
from dashgate.models.password import ConfirmedPassword


class ResetRequest(ConfirmedPassword):
    """POST /password/reset/: the emailed token and the new password. Browsers send no token: theirs is
    in the reset cookie that the link's GET set (the token never sits in a page)."""

    token: TokenText | None = Field(None, description="The token of the emailed link (JSON clients).")
