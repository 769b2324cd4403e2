"""API keys stored at rest: encrypted with a key derived from SECRET_KEY, never kept in clear.

Fernet (from `cryptography`) is authenticated encryption with a timestamp, the usual choice
for a secret a web app must read back; deriving its key from SECRET_KEY means no second
secret to provision, and rotating SECRET_KEY makes stored keys unreadable (they are entered
again) rather than silently wrong.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class KeyUnreadable(Exception):
    """A stored key cannot be decrypted (SECRET_KEY changed since it was stored)."""


def _fernet() -> Fernet:
    digest = hashlib.sha256(b"orchestra.provider-keys:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(key: str) -> str:
    return _fernet().encrypt(key.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise KeyUnreadable(
            "the stored API key cannot be read (SECRET_KEY changed?); enter it again"
        ) from None
