"""The local platform's mail server: ``python -m urbanstack.devplatform.smtp_server <mail dir> <port>``.

An aiosmtpd server on 127.0.0.1 that accepts every message for every recipient and
keeps it as one ``.eml`` file in the mail folder (written to a temporary name, then
renamed, so a reader never sees half a message). Nothing is relayed anywhere: this is
where Keycloak's invitations and the signup confirmations of a development platform
end up, and where tests read them (:mod:`urbanstack.devplatform.mailbox`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from email.utils import formatdate
from pathlib import Path

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
HOST = "127.0.0.1"


class FolderHandler:
    """aiosmtpd handler: every accepted message becomes ``<mail dir>/<time>-<id>.eml``."""

    def __init__(self, folder: Path):
        self.folder = folder

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.eml"
        headers = (f"X-Urbanstack-Envelope-From: {envelope.mail_from}\r\n"
                   f"X-Urbanstack-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
                   f"X-Urbanstack-Received: {formatdate(localtime=False, usegmt=True)}\r\n").encode()
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        partial = self.folder / f".{name}.part"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(headers + content)
        partial.rename(self.folder / name)
        return "250 Message accepted for delivery"


async def serve(folder: Path, port: int) -> None:
    from aiosmtpd.smtp import SMTP

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    handler = FolderHandler(folder)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="urbanstack-dev-smtp", data_size_limit=MAX_MESSAGE_BYTES,
                     decode_data=False, enable_SMTPUTF8=True),
        host=HOST, port=port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"SMTP server on {HOST}:{port}, keeping messages in {folder}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m urbanstack.devplatform.smtp_server <mail dir> <port>", file=sys.stderr)
        return 2
    asyncio.run(serve(Path(argv[0]), int(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
