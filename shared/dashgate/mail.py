"""Mail requests: what the request path puts on the mail queue, one message per POST (SPEC: Delivery).

A message names what to send and to whom, never a secret: the mailer (functions/mailer) looks the
address up, applies the per-address limits, makes the one-time token and sends the mail. So the
request path does the same work for every address, known or not, and a token exists only in the
database (as a hash) and in the mail itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, get_args

#: What a message asks the mailer to do.
Kind = Literal["password_reset", "email_confirm", "password_reset_notice", "password_changed_notice"]
KINDS: tuple[Kind, ...] = get_args(Kind)


@dataclass(frozen=True)
class MailRequest:
    """One message on the mail queue. `email` is the address as submitted (normalised: trimmed and
    lower-cased); `user_id` is set where the request path already knows the user (a confirmation
    for a signed-in user, a notice), and None for a forgot-password request, whatever the address."""

    kind: Kind
    email: str
    user_id: int | None = None

    def to_json(self) -> str:
        """The message body, as sent to the queue."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MailRequest:
        """A message body back into a request; ValueError for anything that is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") not in KINDS or not isinstance(data.get("email"), str):
            raise ValueError("not a dashgate mail request")
        user_id = data.get("user_id")
        if user_id is not None and (not isinstance(user_id, int) or isinstance(user_id, bool)):
            raise ValueError("user_id must be an integer")
        return cls(kind=data["kind"], email=data["email"], user_id=user_id)
