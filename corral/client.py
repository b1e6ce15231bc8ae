"""Talk to a running master's HTTP control API with the standard library.

Where the master is, in order: ``--api HOST:PORT``, ``$CORRAL_API``, the
``STATE_DIR/api`` file a running master writes, then ``127.0.0.1:7071``.
The bearer token: ``$CORRAL_TOKEN``, then ``STATE_DIR/token``.  An API on a
non-loopback address is reached over TLS, trusting the cluster CA in
``STATE_DIR/tls/ca.crt`` (the master serves TLS on any such address).  STATE_DIR:
``--state-dir``, ``$CORRAL_STATE_DIR``, then the master's default.

A running ``corral demo`` leaves a pointer to its state dir (`DemoPointer`,
mode 0600, in the user's runtime dir).  When nothing names a master (no
flag, no ``CORRAL_*`` variable) and no master of the default state dir
answers, the client takes the demo's state dir, so ``corral nodes`` in a
second shell reaches the demo with nothing exported.  A pointer whose
process is gone is ignored.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from corral.master.state import default_state_dir
from corral.master.verbs.base import ApiError, CommandError, Unreachable, UsageError
from corral.transport.addresses import is_loopback, split_hostport

DEFAULT_API = "127.0.0.1:7071"
API_ENV = "CORRAL_API"
TOKEN_ENV = "CORRAL_TOKEN"
STATE_ENV = "CORRAL_STATE_DIR"
TIMEOUT = 30.0  # a verb that waits on workers (launch, rm) answers within this


DEMO_POINTER = "demo.json"


def demo_pointers() -> list[Path]:
    """Where a running demo leaves its pointer: the user's runtime dir, else beside the state dir.

    The demo writes the first; the client reads each (two shells of one
    user may disagree on ``$XDG_RUNTIME_DIR``).
    """
    found = []
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        found.append(Path(runtime) / "corral" / DEMO_POINTER)
    found.append(default_state_dir().parent / f"corral-{DEMO_POINTER}")
    return found


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, session id, start time in clock ticks since boot) of ``pid``, from /proc."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    # after "pid (comm) ": state ppid pgrp session ... starttime is field 22 overall
    return fields[0].decode(), int(fields[3]), int(fields[19])


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot); None if it does not run."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):  # a zombie: ended, only not reaped yet
        return None
    return st[2]


@dataclass(frozen=True)
class DemoPointer:
    """A running demo's process (pid and start ticks, so a reused pid is told apart)
    and its master's state dir."""

    pid: int
    start: int
    state_dir: Path

    @property
    def alive(self) -> bool:
        return start_ticks(self.pid) == self.start

    def text(self) -> str:
        return json.dumps({"pid": self.pid, "start": self.start, "state_dir": str(self.state_dir)})

    @classmethod
    def read(cls, path: Path) -> DemoPointer | None:
        """The pointer in ``path``; None if absent, not ours (another user's), or malformed."""
        try:
            with path.open("rb") as f:
                if os.fstat(f.fileno()).st_uid != os.getuid():
                    return None
                data = json.loads(f.read(4096))
            pid, start, state = data["pid"], data["start"], data["state_dir"]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not (isinstance(pid, int) and isinstance(start, int) and isinstance(state, str)):
            return None
        return cls(pid, start, Path(state))


def live_demo() -> DemoPointer | None:
    """The running demo a pointer names, if any."""
    for path in demo_pointers():
        pointer = DemoPointer.read(path)
        if pointer is not None and pointer.alive:
            return pointer
    return None


def nothing_configured() -> bool:
    """No ``CORRAL_STATE_DIR``, ``CORRAL_API`` or ``CORRAL_TOKEN`` names a master."""
    return not any(os.environ.get(v, "").strip() for v in (STATE_ENV, API_ENV, TOKEN_ENV))


def master_answers(state: Path, besides: Path | None = None) -> bool:
    """True if a master published an API address in ``state`` and something listens there.

    ``besides``: a state dir whose master does not count (the demo's, which
    may have taken the default address that a stale ``api`` file names).
    """
    address = _read_first_line(state / "api")
    if not address or (besides is not None and address == _read_first_line(besides / "api")):
        return False
    try:
        host, port = split_hostport(address, 7071, what="API address", port_zero=False)
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except (OSError, ValueError):
        return False


def demo_state_dir() -> Path | None:
    """The running demo's state dir, when nothing else names a master (see the module doc)."""
    if not nothing_configured():
        return None
    demo = live_demo()
    if demo is None or master_answers(default_state_dir(), besides=demo.state_dir):
        return None
    return demo.state_dir


def state_dir(given: str | None) -> Path:
    if given:
        return Path(given).expanduser()
    env = os.environ.get(STATE_ENV, "").strip()
    return Path(env).expanduser() if env else default_state_dir()


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``http://`` allowed) into a pair; `UsageError` if malformed."""
    text = text.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
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

    def __init__(
        self,
        api: str,
        token: str | CommandError,
        timeout: float = TIMEOUT,
        ca: Path | None = None,
    ) -> None:
        self.api = api
        self.host, self.port = split_address(api)
        self.token = token  # or why there is none: reported once the master is reachable
        self.timeout = timeout
        self.ca = ca  # the cluster CA's certificate, for an API off loopback (TLS)

    @classmethod
    def from_args(cls, api: str | None, state: str | None) -> Client:
        demo = demo_state_dir() if api is None and state is None else None
        sd = demo or state_dir(state)
        address = find_api(api, sd)
        try:
            token: str | CommandError = find_token(sd)
        except CommandError as e:
            token = e
        return cls(address, token, ca=sd / "tls" / "ca.crt")

    # --- plumbing -----------------------------------------------------------
    def _unreachable(self, e: BaseException, connected: bool = False) -> Unreachable:
        hint = " (is `corral master` running?)" if isinstance(e, ConnectionRefusedError) else ""
        return Unreachable(f"cannot reach the master at {self.api}: {_why(e)}{hint}", connected)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        """Plain HTTP on loopback; elsewhere HTTPS that trusts only the cluster CA."""
        if is_loopback(self.host):
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        import ssl

        if self.ca is None or not self.ca.exists():
            raise CommandError(
                f"the API at {self.api} is served over TLS, and the cluster CA's certificate "
                f"{self.ca or 'STATE_DIR/tls/ca.crt'} is not here (copy it, or use --state-dir)"
            )
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca))
        except (OSError, ssl.SSLError) as e:
            raise CommandError(f"cannot use the CA certificate {self.ca}: {e}") from None
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=ctx)

    def _open(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connection(timeout or self.timeout)
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

    def stream(
        self,
        path: str,
        connect_timeout: float = 10.0,
        method: str = "GET",
        body: Any = None,
        **query: Any,
    ) -> Iterator[Any]:
        """Decoded NDJSON objects until the server ends the stream.

        Waits as long as it takes between lines (a quiet process is no
        error); a broken connection raises `Unreachable`.
        """
        if query:
            path += "?" + _query(query)
        conn, resp = self._open(method, path, body, timeout=connect_timeout)
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
