"""The dashboard's login: a signed, http-only cookie naming the key that logged in and the
person using it, and the CSRF token its forms carry. The key itself is never stored in the
cookie; a revoked key ends its sessions at their next request, and logging out ends the
session by its fingerprint (freight/service/logins.py), so a copy of the cookie is refused too."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

COOKIE = "freight_session"
LIFETIME = 12 * 3600
ADMIN = "env"  # the session of FREIGHT_API_KEY, which has no row


@dataclass(frozen=True)
class Session:
    key: str  # a stored key's id, or ADMIN
    person: str  # as deploys and locks record them; "" for the key's own name
    expires: int


def _sign(secret: str, text: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def issue(secret: str, key: str, person: str = "", *, now: float | None = None) -> str:
    expires = int((now or time.time()) + LIFETIME)
    # Base64 has no dots: the cookie splits into its four parts whatever the name holds.
    name = base64.urlsafe_b64encode(person.encode()).decode().rstrip("=")
    body = f"{key}.{name}.{expires}"
    return f"{body}.{_sign(secret, 'session:' + body)}"


def read(secret: str, cookie: str | None, *, now: float | None = None) -> Session | None:
    if not cookie or cookie.count(".") != 3:
        return None
    key, name, expires, signature = cookie.split(".")
    body = f"{key}.{name}.{expires}"
    if not hmac.compare_digest(signature.encode(), _sign(secret, "session:" + body).encode()):
        return None
    if not expires.isdigit() or int(expires) < (now or time.time()):
        return None
    try:
        person = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return Session(key, person, int(expires))


def fingerprint(cookie: str) -> str:
    """What a logged-out session is remembered by."""
    return hashlib.sha256(cookie.encode()).hexdigest()


def csrf_token(secret: str, cookie: str) -> str:
    return _sign(secret, "csrf:" + cookie)


def csrf_ok(secret: str, cookie: str | None, token: str | None) -> bool:
    return bool(cookie and token) and hmac.compare_digest(
        str(token).encode(), csrf_token(secret, str(cookie)).encode()
    )
