"""Checks of a signup request that need no service: the e-mail address and its domain."""

from __future__ import annotations

import re

# Free-mail and disposable providers: an official request comes from the municipality's
# own domain, so these are refused. Lower-case domains; subdomains count too.
FREE_MAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "gmx.de", "gmx.net", "gmx.at", "gmx.ch", "gmx.com", "web.de", "t-online.de",
    "freenet.de", "outlook.com", "outlook.de", "hotmail.com", "hotmail.de", "live.com", "live.de", "msn.com",
    "yahoo.com", "yahoo.de", "ymail.com", "icloud.com", "me.com", "mac.com", "aol.com", "aol.de", "posteo.de",
    "posteo.net", "mailbox.org", "protonmail.com", "proton.me", "pm.me", "tutanota.com", "tutanota.de",
    "tuta.io", "tuta.com", "arcor.de", "online.de", "1und1.de", "email.de", "kabelmail.de", "vodafonemail.de",
    "mail.de", "zoho.com", "yandex.com", "yandex.ru", "mail.ru", "gmx.eu", "magenta.de", "unitybox.de",
    "trashmail.com", "trashmail.de", "mailinator.com", "10minutemail.com", "guerrillamail.com", "wegwerfmail.de",
    "byom.de", "spam4.me", "dismail.de", "systemli.org", "riseup.net", "disroot.org", "fastmail.com",
})

_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                      r"[A-Za-z0-9])?\.)+[A-Za-z]{2,63})$")


def email_domain(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip().lower()


def email_problem(address: str) -> str | None:
    """Why ``address`` cannot be the official address of a request (English message id), or None."""
    address = (address or "").strip()
    if len(address) > 254 or _ADDRESS.fullmatch(address) is None:
        return "Enter a complete e-mail address such as anna.schmidt@verl.de."
    if is_free_mail(email_domain(address)):
        return ("Addresses of free-mail providers cannot be accepted. Please use the official e-mail address of "
                "your administration (for example @verl.de), so that we can see that the request comes from "
                "the municipality.")
    return None


def is_free_mail(domain: str) -> bool:
    domain = domain.lower().rstrip(".")
    parts = domain.split(".")
    return any(".".join(parts[i:]) in FREE_MAIL_DOMAINS for i in range(len(parts) - 1))
