"""Lighter auth tokens as the simulator reads them (REST `authorization` header / `auth` query,
WebSocket subscribe `"auth"`).

The SDK's `create_auth_token_with_expiry` makes `"{expiry_unix_s}:{account_index}:{api_key_index}:{hex_sig}"`.
The simulator checks the form, the expiry and that the account and key exist; like sendTx's `Sig`,
the signature itself is not verified (the simulator cannot derive a key's public half).
"""
from __future__ import annotations

from dataclasses import dataclass

INVALID_PARAM = 20001


class AuthError(ValueError):
    """A token that is missing, malformed or expired; `code` is Lighter's (20001, invalid param)."""

    def __init__(self, message: str, code: int = INVALID_PARAM):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AuthToken:
    expiry_s: int
    account_index: int
    api_key_index: int


def parse_auth_token(token: str | None, now_s: int) -> AuthToken:
    """The token's account and key, or AuthError saying what is wrong with it."""
    if not token:
        raise AuthError("invalid param : auth field is required")
    parts = token.strip().split(":")
    if len(parts) != 4 or not all(parts[:3]) or not parts[3]:
        raise AuthError("invalid param : auth token must be expiry:account_index:api_key_index:signature")
    try:
        expiry_s, account_index, api_key_index = (int(p) for p in parts[:3])
    except ValueError:
        raise AuthError("invalid param : auth token fields expiry, account_index and api_key_index "
                        "must be integers") from None
    if expiry_s < now_s:
        raise AuthError(f"invalid param : auth token expired at {expiry_s} s (now {now_s} s)")
    return AuthToken(expiry_s, account_index, api_key_index)
