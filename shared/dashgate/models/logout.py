"""/logout/: the body of a POST, and what a GET that may not sign out answers."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from dashgate.models import Reply, Submission


class LogoutRequest(Submission):
    """POST /logout/: sign out this session, or every session of the user."""

    everywhere: bool = Field(False, description="Also revoke the user's other sessions.")

    checkboxes: ClassVar = ("everywhere",)


class LogoutNoticeOut(Reply):
    """A GET /logout/ that may not sign out (another site's, or a background fetch): how to do it."""

    logged_out: bool
    message: str
