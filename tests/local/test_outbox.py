"""`make run`'s mail: spooled messages → the real mailer (as SQS hands them over) → .eml files → /_outbox/."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from dashgate.mail import MailRequest
from dashgate.mailqueue import SpoolQueue
from localrun import outbox
from localrun.outbox import MailPump, OutboxPages
from tests.local.test_server import fetch
from tests.support import wait_for

BASE = "http://127.0.0.1:3000"


def mails(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.eml")) if directory.is_dir() else []


def test_spooled_mail_is_sent_by_the_mailer_and_listed_at_the_outbox(start_server, database_url: str, db,
                                                                     tmp_path: Path) -> None:
    # GIVEN a running server (its outbox under DASHGATE_LOCAL_DIR) and a registered user
    local = start_server(DATABASE_URL=database_url)
    box = tmp_path / "local" / "outbox"
    jane = {"email": "jane@example.com", "password": "correct horse battery", "first_name": "Jane", "last_name": "D"}
    created = fetch(f"{local.url}/register/", "POST", json.dumps(jane).encode(), {"Content-Type": "application/json"})
    assert created[0] == 201
    user_id = json.loads(created[2])["user"]["id"]
    wait_for(lambda: not SpoolQueue(box / "queue").pending(), timeout=10)  # whatever registering spooled
    before = len(mails(box))

    # WHEN the request path spools a notice and a reset request for her
    SpoolQueue(box / "queue").send(MailRequest("password_changed_notice", "jane@example.com", user_id))
    SpoolQueue(box / "queue").send(MailRequest("password_reset", "jane@example.com"))

    # THEN the mailer writes both to the outbox, and /_outbox/ lists them with the reset link clickable
    wait_for(lambda: len(mails(box)) == before + 2 and not SpoolQueue(box / "queue").pending(), timeout=15)
    status, headers, page = fetch(f"{local.url}/_outbox/")
    assert status == 200 and dict(headers)["Referrer-Policy"] == "no-referrer"
    assert "Your password has been changed" in page and "Reset your password" in page
    assert page.index("Reset your password") < page.index("Your password has been changed")  # newest first
    [link] = re.findall(r'href="([^"]*/password/reset/[^"]*)"', page)
    assert link.startswith(f"{local.url}/password/reset/?token=")  # PUBLIC_BASE_URL: this server
    newest = mails(box)[-1].name
    one = fetch(f"{local.url}/_outbox/{newest}")
    assert one[0] == 200 and "Reset your password" in one[2] and f'href="{link}"' in one[2]
    assert fetch(f"{local.url}/_outbox/{newest[:-4]}.txt")[0] == 404
    assert fetch(f"{local.url}/_outbox/..%2F..%2Fsession-key")[0] == 404
    assert link.split("token=")[1] not in "".join(local.lines)  # the console never shows a token


class Mailer:
    """A stand-in for the mailer's environments: fails the messages it is told to, records the rest."""

    def __init__(self, failing: set[str]) -> None:
        self.route = SimpleNamespace(function="MailerFunction")
        self.failing, self.seen = failing, []

    def invoke(self, event: dict, context) -> dict:
        self.seen.append(event)
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                                      if MailRequest.from_json(r["body"]).email in self.failing]}


def test_a_failing_message_is_kept_tried_again_and_after_five_attempts_moved_to_dead(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    monkeypatch.setattr(outbox, "RETRY_SECONDS", 0)
    spool = SpoolQueue(tmp_path / "queue")
    spool.send(MailRequest("password_reset", "ok@example.com"))
    spool.send(MailRequest("password_reset", "bad@example.com"))
    mailer = Mailer({"bad@example.com"})
    pump = MailPump(tmp_path, mailer)  # type: ignore[arg-type]

    pump.pump_once()
    assert [MailRequest.from_json(p.read_text()).email for p in spool.pending()] == ["bad@example.com"]
    for _ in range(4):
        pump.pump_once()

    record = mailer.seen[0]["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["attributes"]["ApproximateReceiveCount"] == "1"
    assert [e["Records"][0]["attributes"]["ApproximateReceiveCount"] for e in mailer.seen[1:]] == ["2", "3", "4", "5"]
    assert spool.pending() == [] and len(list((tmp_path / "dead").glob("*.json"))) == 1


def test_the_page_escapes_the_text_and_links_only_to_the_public_base_url(tmp_path: Path) -> None:
    pages = OutboxPages(tmp_path, BASE)

    html = pages.linked(f'Go to {BASE}/password/reset/?token=a&b=<x>. Not https://evil.example/x "<b>"')

    assert f'<a href="{BASE}/password/reset/?token=a&amp;b=">{BASE}/password/reset/?token=a&amp;b=</a>' in html
    assert "&lt;x&gt;." in html and "https://evil.example/x" in html and 'href="https://evil' not in html
    assert "&quot;&lt;b&gt;&quot;" in html
    assert pages.linked("http://127.0.0.1:30001/x") == "http://127.0.0.1:30001/x"  # another port: not ours
    assert pages.respond("/_outbox/")[0] == 200 and b"No mail yet" in pages.respond("/_outbox/")[2]


def test_only_the_mailers_own_files_are_served_not_a_path_out_of_the_outbox(tmp_path: Path) -> None:
    # GIVEN an outbox beside the local session key, as `make run` lays them out (.local/outbox, .local/session-key)
    (tmp_path / "outbox").mkdir()
    (tmp_path / "session-key").write_text("Subject: the key\n\nsecret\n")
    (tmp_path / "outbox" / "notes.eml").write_text("Subject: not the mailer's\n\nhello\n")
    pages = OutboxPages(tmp_path / "outbox", BASE)

    # WHEN paths that leave the outbox, or name a file the mailer did not write, are asked for
    # THEN each is a 404 without the file's text (a raw `..` reaches the gateway undecoded)
    for path in ("/_outbox/../session-key", "/_outbox/../outbox/../session-key", "/_outbox/notes.eml"):
        status, _, body, _ = pages.respond(path)
        assert status == 404 and b"secret" not in body and b"hello" not in body
