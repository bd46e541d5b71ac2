"""The local platform's SMTP server: real SMTP in, one .eml file per message out."""

from __future__ import annotations

import smtplib
import uuid
from email.message import EmailMessage

from urbanstack import mail
from urbanstack.devplatform.mailbox import Mailbox


def test_a_message_sent_by_smtp_lands_in_the_mail_folder(mailbox):
    to = f"anna-{uuid.uuid4().hex[:8]}@verl.de"
    before = mailbox.box.seen()
    message_id = mail.send(mailbox.settings, to, "Bitte bestätigen Sie Ihre Adresse",
                           "Hallo,\nbitte öffnen Sie http://127.0.0.1:8080/signup/confirm/abc?x=1&y=2 .\n",
                           html="<p><a href=\"http://127.0.0.1:8080/signup/confirm/abc?x=1&amp;y=2\">Bestätigen</a></p>")
    received = mailbox.box.wait_for(to, subject_contains="bestätigen", timeout=10, after=before)
    assert received.message["Message-ID"] == message_id
    assert received.subject == "Bitte bestätigen Sie Ihre Adresse"
    assert "öffnen" in received.text()
    assert received.links() == ["http://127.0.0.1:8080/signup/confirm/abc?x=1&y=2"]
    assert received.path.parent == mailbox.settings.mail_dir if mailbox.own else True


def test_messages_are_told_apart_by_recipient(mailbox):
    first, second = (f"{name}-{uuid.uuid4().hex[:8]}@kreis-gt.de" for name in ("a", "b"))
    with smtplib.SMTP("127.0.0.1", mailbox.settings.smtp_port, timeout=5) as client:
        for to in (first, second):
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = "ops@urbanstack.localhost", to, f"für {to}"
            message.set_content("Text")
            client.send_message(message)
    assert [m.subject for m in mailbox.box.wait_for(second, timeout=10) and mailbox.box.messages(second)] == [
        f"für {second}"]
    assert len(Mailbox(mailbox.box.folder).messages(first)) == 1


def test_the_relay_that_refuses_is_named_without_the_password(tmp_path):
    import socket

    from urbanstack.settings import Settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = Settings.from_env({"URBANSTACK_STATE_DIR": str(tmp_path), "URBANSTACK_SMTP_PORT": str(closed),
                                  "URBANSTACK_SMTP_USER": "relay", "URBANSTACK_SMTP_PASSWORD": "s3cret-pw"})
    try:
        mail.send(settings, "x@verl.de", "Betreff", "Text")
    except mail.MailError as error:
        assert f"127.0.0.1:{closed}" in str(error) and "s3cret-pw" not in str(error)
    else:
        raise AssertionError("sending to a closed port must fail")
