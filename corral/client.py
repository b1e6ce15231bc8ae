"""Talk to a running master's HTTP control API with the standard library.

Where the master is, in order: ``--api HOST:PORT``, ``$CORRAL_API``, the
``STATE_DIR/api`` file a running master writes, then ``127.0.0.1:7071``.
The bearer token: ``$CORRAL_TOKEN``, then ``STATE_DIR/token``.  STATE_DIR:
``--state-dir``, ``$CORRAL_STATE_DIR``, then the master's default.

Every failure is raised as a `CommandError` (`ApiError`, `Unreachable`)
carrying the one line to print and the exit status, so no expected failure
ever shows a traceback.  `Client` is the `master.verbs.base.Api` the verbs
run against.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from corral.master.state import default_state_dir
from corral.master.verbs.base import ApiError, CommandError, Unreachable, UsageError
from corral.transport.addresses import split_hostport

DEFAULT_API = "127.0.0.1:7071"
API_ENV = "CORRAL_API"
TOKEN_ENV = "CORRAL_TOKEN"
STATE_ENV = "CORRAL_STATE_DIR"
TIMEOUT = 30.0  # a verb that waits on workers (launch, rm) answers within this


def state_dir(given: str | None) -> Path:
    if given:
        return Path(given).expanduser()
    env = os.environ.get(STATE_ENV, "").strip()
    return Path(env).expanduser() if env else default_state_dir()


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``http://`` allowed) into a pair; `UsageError` if malformed."""
    text = text.strip().removeprefix("http://").rstrip("/")
    try:
        return split_hostport(text, 7071, what="API address", port_zero=False)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _read_first_line(path: Path) -> str:
    try:
        return path.read_text().strip().splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def find_api(given: str | None, state: Path) -> str:
    for candidate in (given, os.environ.get(API_ENV, "").strip(), _read_first_line(state / "api")):
        if candidate:
            return candidate
    return DEFAULT_API


def find_token(state: Path) -> str:
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    path = state / "token"
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise CommandError(
            f"no token: {path} does not exist (set {TOKEN_ENV} or --state-dir to the master's)"
        ) from None
    except OSError as e:
        raise CommandError(f"cannot read token {path}: {e.strerror}") from None
    if not token:
        raise CommandError(f"token file {path} is empty")
    return token


def _why(e: BaseException) -> str:
    """A socket failure in a few lowercase words."""
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return f"unknown host ({e.strerror})"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, http.client.RemoteDisconnected | http.client.IncompleteRead):
        return "the connection closed early"
    if isinstance(e, OSError) and e.errno is not None:
        return (e.strerror or errno.errorcode.get(e.errno, str(e))).lower()
    return str(e) or type(e).__name__


def _query(params: dict[str, Any]) -> str:
    """Query parameters, None left out, booleans as ``1`` and ``0``."""
    given = {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
    return urlencode({k: v for k, v in given.items() if v not in (None, "")})


class Client:
    """One master's control API: JSON requests and an NDJSON stream reader."""

    def __init__(self, api: str, token: str | CommandError, timeout: float = TIMEOUT) -> None:
        self.api = api
        self.host, self.port = split_address(api)
        self.token = token  # or why there is none: reported once the master is reachable
        self.timeout = timeout

    @classmethod
    def from_args(cls, api: str | None, state: str | None) -> Client:
        sd = state_dir(state)
        address = find_api(api, sd)
        try:
            token: str | CommandError = find_token(sd)
        except CommandError as e:
            token = e
        return cls(address, token)

    # --- plumbing -----------------------------------------------------------
    def _unreachable(self, e: BaseException, connected: bool = False) -> Unreachable:
        hint = " (is `corral master` running?)" if isinstance(e, ConnectionRefusedError) else ""
        return Unreachable(f"cannot reach the master at {self.api}: {_why(e)}{hint}", connected)

    def _open(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
        if isinstance(self.token, CommandError):
            # No token: if there is no master either, that is the news.
            try:
                conn.connect()
            except OSError as e:
                raise self._unreachable(e) from None
            finally:
                conn.close()
            raise self.token
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            connected = conn.sock is not None
            conn.close()
            raise self._unreachable(e, connected) from None
        if resp.status >= 400:
            try:
                raw = resp.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                conn.close()
            raise ApiError(self._error_text(resp.status, raw), resp.status)
        return conn, resp

    @staticmethod
    def _error_text(status: int, raw: bytes) -> str:
        try:
            message = str(json.loads(raw)["error"])
        except (ValueError, KeyError, TypeError):
            text = raw.decode(errors="replace").strip().splitlines()
            message = f"the master answered HTTP {status}" + (f": {text[0]}" if text else "")
        message = " ".join(message.split())  # one line, always
        if status == 401:
            message += f" (check {TOKEN_ENV} or --state-dir)"
        return message

    def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """One JSON round trip; returns the decoded body."""
        if query:
            path += "?" + _query(query)
        conn, resp = self._open(method, path, body)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e, connected=True) from None
        finally:
            conn.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise CommandError(f"the master at {self.api} sent a reply that is not JSON") from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, **query)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def stream(self, path: str, connect_timeout: float = 10.0, **query: Any) -> Iterator[Any]:
        """Decoded NDJSON objects until the server ends the stream.

        Waits as long as it takes between lines (a quiet process is no
        error); a broken connection raises `Unreachable`.
        """
        path += "?" + _query(query)
        conn, resp = self._open("GET", path, timeout=connect_timeout)
        try:
            if conn.sock is not None:
                conn.sock.settimeout(None)
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as e:
                    raise self._unreachable(e) from None
                if not line:
                    return
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        raise Unreachable(f"the master at {self.api} sent a bad line") from None
        finally:
            conn.close()
