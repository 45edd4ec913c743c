"""POST /password/change/: the current password and the new one (SPEC: Change password)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from dashgate.models import PASSWORD_MAX, text
from dashgate.models.password import ConfirmedPassword


class ChangeRequest(ConfirmedPassword):
    """POST /password/change/ (signed in): the current password and the new one."""

    current_password: text(strip=False, min_length=1, max_length=PASSWORD_MAX) = Field(
        description="The password the account has now.")

    messages: ClassVar = {
        **ConfirmedPassword.messages,
        "current_password": {"missing": "Current password is required.",
                             "string_too_short": "Current password is required.",
                             "string_too_long": "Your current password is incorrect"},
    }
