"""Reading the local platform's mail folder (for tests and for people trying the platform).

    box = Mailbox(settings.mail_dir)
    message = box.wait_for("anna@verl.de", subject_contains="Bestätigen", timeout=30)
    link = message.links(startswith="http://127.0.0.1")[0]
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

_URL = re.compile(r"https?://[^\s\"'<>]+")


@dataclass(frozen=True)
class Mail:
    path: Path
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def sender(self) -> str:
        return str(self.message.get("From", ""))

    @property
    def recipients(self) -> list[str]:
        """Envelope recipients (what the server accepted) and the To/Cc headers, lower-case."""
        values = [str(v) for key in ("X-Urbanstack-Envelope-To", "To", "Cc") for v in self.message.get_all(key, [])]
        return sorted({address.lower() for _, address in getaddresses(values) if address})

    def text(self) -> str:
        """The plain-text part (or the HTML part's text when there is none)."""
        part = self.message.get_body(preferencelist=("plain",))
        if part is not None:
            return part.get_content()
        body = self.html()
        return html.unescape(re.sub(r"<[^>]+>", " ", body))

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return part.get_content() if part is not None else ""

    def links(self, startswith: str = "") -> list[str]:
        """Every http(s) link in the message, in order, without duplicates."""
        found: list[str] = []
        for body in (self.text(), self.html()):
            for url in _URL.findall(body):
                url = html.unescape(url).rstrip(".,;)")
                if url.startswith(startswith) and url not in found:
                    found.append(url)
        return found


class Mailbox:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    def messages(self, to: str | None = None) -> list[Mail]:
        """Messages in the order they arrived, optionally only those to ``to``."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*.eml")):
            with path.open("rb") as handle:
                message = email.message_from_binary_file(handle, policy=email.policy.default)
            mail = Mail(path, message)  # type: ignore[arg-type]
            if to is None or to.lower() in mail.recipients:
                found.append(mail)
        return found

    def wait_for(self, to: str, *, subject_contains: str = "", timeout: float = 30.0,
                 after: set[Path] | None = None) -> Mail:
        """The first message to ``to`` (whose subject contains the text) that is not in ``after``;
        TimeoutError naming what arrived instead."""
        deadline = time.monotonic() + timeout
        while True:
            for mail in self.messages(to):
                if (after is None or mail.path not in after) and subject_contains in mail.subject:
                    return mail
            if time.monotonic() > deadline:
                seen = [f"{m.recipients} {m.subject!r}" for m in self.messages()[-5:]]
                raise TimeoutError(f"no message to {to} with {subject_contains!r} in the subject within "
                                   f"{timeout:.0f} s in {self.folder}; the last ones: {seen or 'none'}")
            time.sleep(0.2)

    def seen(self) -> set[Path]:
        """The messages there now (pass as ``after`` to wait for a newer one)."""
        return {mail.path for mail in self.messages()}
