"""The cluster token: its file, and HMAC-SHA256 proofs over it.

The token is what a node enrolls with (`transport.handshake.enroll`): each
side sends a fresh random nonce and proves it holds the token by HMAC-ing
both nonces, and what it vouches for, under a role label, so a proof can be
neither replayed nor reflected back at its sender.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

NONCE_SIZE = 32
TOKEN_ENV = "CORRAL_TOKEN"


class AuthError(Exception):
    """The peer failed the handshake; the message says how."""


class Redirect(AuthError):
    """A standby master turned us away; ``leader`` is the leader's address ("" if none)."""

    def __init__(self, reason: str, leader: str) -> None:
        super().__init__(reason)
        self.leader = leader


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def proof(token: bytes, role: str, first: bytes, second: bytes) -> bytes:
    """HMAC-SHA256 over a role label and both nonces."""
    return hmac.new(token, role.encode() + b"\0" + first + second, hashlib.sha256).digest()


def check(expected: bytes, got: bytes) -> bool:
    return hmac.compare_digest(expected, got)


def new_token() -> str:
    return secrets.token_hex(32)


def ensure_token(state_dir: Path) -> str:
    """The cluster token in ``state_dir/token``, created (mode 0600) if absent.

    The directory is made 0700 (and an existing one tightened to it): it
    holds the token and an event log of every command line.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if state_dir.stat().st_mode & 0o077:
        state_dir.chmod(0o700)
    path = state_dir / "token"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_token() + "\n")
    return read_token(path)


def read_token(path: Path) -> str:
    token = path.read_text().strip()
    if not token:
        raise AuthError(f"token file {path} is empty")
    return token


def load_token(token_file: str | None) -> str:
    """Token from ``token_file``, else ``$CORRAL_TOKEN``; AuthError if neither."""
    if token_file:
        try:
            return read_token(Path(token_file))
        except OSError as e:
            raise AuthError(f"cannot read token file {token_file}: {e.strerror}") from None
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    raise AuthError(f"no cluster token: pass --token-file or set {TOKEN_ENV}")
