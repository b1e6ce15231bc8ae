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

import _socket
import errno
import os

from corral.master.state import default_state_path
from corral.master.verbs.base import ApiError, CommandError, Unreachable, UsageError
from corral.transport import quickjson
from corral.transport.addresses import from_here, is_loopback, split_hostport

TYPE_CHECKING = False  # typing is for mypy only: not loaded at run time
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

# The command line runs this module on every client verb, so it stays off
# the standard library's heavy modules: no http.client (with the email
# package, 20 ms of start-up), no pathlib, dataclasses or urllib, and the
# C socket module without socket.py (its enum tables and selectors cost
# milliseconds; nothing here needs them).  Paths are strings inside; the
# functions other modules call still take and return Paths, importing
# pathlib when they are called.

DEFAULT_API = "127.0.0.1:7071"
API_ENV = "CORRAL_API"
TOKEN_ENV = "CORRAL_TOKEN"
STATE_ENV = "CORRAL_STATE_DIR"
TIMEOUT = 30.0  # a verb that waits on workers (launch, rm) answers within this


DEMO_POINTER = "demo.json"


def _pointer_paths() -> list[str]:
    found = []
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        found.append(os.path.join(runtime, "corral", DEMO_POINTER))
    found.append(os.path.join(os.path.dirname(default_state_path()), f"corral-{DEMO_POINTER}"))
    return found


def demo_pointers() -> list[Path]:
    """Where a running demo leaves its pointer: the user's runtime dir, else beside the state dir.

    The demo writes the first; the client reads each (two shells of one
    user may disagree on ``$XDG_RUNTIME_DIR``).
    """
    from pathlib import Path

    return [Path(p) for p in _pointer_paths()]


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, session id, start time in clock ticks since boot) of ``pid``, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
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


class DemoPointer:
    """A running demo's process (pid and start ticks, so a reused pid is told apart)
    and its master's state dir."""

    __slots__ = ("pid", "start", "state")

    def __init__(self, pid: int, start: int, state_dir: str | os.PathLike[str]) -> None:
        self.pid = pid
        self.start = start
        self.state = os.fspath(state_dir)

    @property
    def state_dir(self) -> Path:
        from pathlib import Path

        return Path(self.state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DemoPointer):
            return NotImplemented
        return (self.pid, self.start, self.state) == (other.pid, other.start, other.state)

    def __hash__(self) -> int:
        return hash((self.pid, self.start, self.state))

    def __repr__(self) -> str:
        return f"DemoPointer(pid={self.pid}, start={self.start}, state_dir={self.state!r})"

    @property
    def alive(self) -> bool:
        return start_ticks(self.pid) == self.start

    def text(self) -> str:
        return quickjson.dumps({"pid": self.pid, "start": self.start, "state_dir": self.state})

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> DemoPointer | None:
        """The pointer in ``path``; None if absent, not ours (another user's), or malformed."""
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_uid != os.getuid():
                    return None
                data = quickjson.loads(f.read(4096))
            pid, start, state = data["pid"], data["start"], data["state_dir"]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not (isinstance(pid, int) and isinstance(start, int) and isinstance(state, str)):
            return None
        return cls(pid, start, state)


def live_demo() -> DemoPointer | None:
    """The running demo a pointer names, if any."""
    for path in _pointer_paths():
        pointer = DemoPointer.read(path)
        if pointer is not None and pointer.alive:
            return pointer
    return None


def nothing_configured() -> bool:
    """No ``CORRAL_STATE_DIR``, ``CORRAL_API`` or ``CORRAL_TOKEN`` names a master."""
    return not any(os.environ.get(v, "").strip() for v in (STATE_ENV, API_ENV, TOKEN_ENV))


def master_answers(state: str | os.PathLike[str], besides: str | None = None) -> bool:
    """True if a master published an API address in ``state`` and something listens there.

    ``besides``: a state dir whose master does not count (the demo's, which
    may have taken the default address that a stale ``api`` file names).
    """
    address = _read_first_line(os.path.join(state, "api"))
    if not address or (
        besides is not None and address == _read_first_line(os.path.join(besides, "api"))
    ):
        return False
    try:
        host, port = split_hostport(address, 7071, what="API address", port_zero=False)
        dial(host, port, 0.3).close()
        return True
    except (OSError, ValueError):
        return False


def _demo_state() -> str | None:
    if not nothing_configured():
        return None
    demo = live_demo()
    if demo is None or master_answers(default_state_path(), besides=demo.state):
        return None
    return demo.state


def demo_state_dir() -> Path | None:
    """The running demo's state dir, when nothing else names a master (see the module doc)."""
    found = _demo_state()
    if found is None:
        return None
    from pathlib import Path

    return Path(found)


def _state_path(given: str | None) -> str:
    if given:
        return os.path.expanduser(given)
    env = os.environ.get(STATE_ENV, "").strip()
    return os.path.expanduser(env) if env else default_state_path()


def state_dir(given: str | None) -> Path:
    """The state dir ``--state-dir`` (``given``), ``$CORRAL_STATE_DIR`` or the default names."""
    from pathlib import Path

    return Path(_state_path(given))


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``http://`` allowed) into a pair; `UsageError` if malformed."""
    text = text.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
    try:
        return split_hostport(text, 7071, what="API address", port_zero=False)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip().splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def find_api(given: str | None, state: str | os.PathLike[str]) -> str:
    api_file = os.path.join(state, "api")
    for candidate in (given, os.environ.get(API_ENV, "").strip(), _read_first_line(api_file)):
        if candidate:
            return candidate
    return DEFAULT_API


def find_token(state: str | os.PathLike[str]) -> str:
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    path = os.path.join(state, "token")
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except FileNotFoundError:
        raise CommandError(
            f"no token: {path} does not exist (set {TOKEN_ENV} or --state-dir to the master's)"
        ) from None
    except OSError as e:
        raise CommandError(f"cannot read token {path}: {e.strerror}") from None
    if not token:
        raise CommandError(f"token file {path} is empty")
    return token


class ClosedEarly(ConnectionError):
    """The master closed the connection before its reply was whole."""


class BadReply(Exception):
    """Bytes that are not the HTTP/1.1 this client speaks."""


def _why(e: BaseException) -> str:
    """A socket failure in a few lowercase words."""
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, _socket.gaierror):
        return f"unknown host ({e.strerror})"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if isinstance(e, ClosedEarly):
        return "the connection closed early"
    if isinstance(e, BadReply):
        return f"a reply that is not HTTP ({e})"
    if isinstance(e, OSError) and e.errno is not None:
        return (e.strerror or errno.errorcode.get(e.errno, str(e))).lower()
    return str(e) or type(e).__name__


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _quote(text: str) -> str:
    """``text`` percent-encoded for a query (what RFC 3986 leaves unreserved stays)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def _query(params: dict[str, Any]) -> str:
    """Query parameters, None left out, booleans as ``1`` and ``0``."""
    given = {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}
    return "&".join(
        f"{_quote(str(k))}={_quote(str(v))}" for k, v in given.items() if v not in (None, "")
    )


# --- HTTP/1.1, the part of it the API speaks -------------------------------------------
MAX_LINE = 64 * 1024  # a status line, a header, a chunk size or an NDJSON line is shorter


def dial(host: str, port: int, timeout: float) -> _socket.socket:
    """A TCP connection to ``host:port`` (each address in turn), as ``socket.create_connection``."""
    # An ASCII host as bytes: a str would load the idna codec (and unicodedata).
    name: str | bytes = host.encode() if host.isascii() else host
    error: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as e:
            sock.close()
            error = e
    raise error or OSError(f"no address for {host}")


class Reader:
    """Buffered reads from a socket (a ``makefile`` without socket.py)."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def readline(self, limit: int) -> bytes:
        """A line with its newline; shorter only at the end of the stream or at ``limit``."""
        start = 0
        while True:
            end = self.buf.find(b"\n", start, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self.buf) >= limit:
                return self._take(limit)
            start = len(self.buf)
            if not self._fill():
                return self._take(len(self.buf))

    def read(self, n: int) -> bytes:
        """``n`` bytes, fewer only at the end of the stream."""
        while len(self.buf) < n and self._fill():
            pass
        return self._take(n)

    def read1(self, n: int) -> bytes:
        """What is buffered, else one receive (b"" at the end of the stream)."""
        if not self.buf:
            self._fill()
        return self._take(n)


class Response:
    """A reply's status and headers, read; its body on demand (sized, chunked or to close)."""

    def __init__(self, file: Reader) -> None:
        self._file = file
        status = self._line().split(None, 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
            raise BadReply(f"status line {b' '.join(status)[:40]!r}")
        self.status = int(status[1])
        self.headers: dict[str, str] = {}
        while line := self._line().rstrip(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                raise BadReply(f"header {line[:40]!r}")
            self.headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")

    def _line(self) -> bytes:
        line = self._file.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            raise ClosedEarly() if len(line) < MAX_LINE else BadReply("a line too long")
        return line

    def _exactly(self, n: int) -> bytes:
        data = self._file.read(n)
        if len(data) < n:
            raise ClosedEarly()
        return data

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives: a chunk at a time when chunked."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_text = self._line().split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise BadReply(f"chunk size {size_text[:20]!r}") from None
                if size == 0:
                    while self._line().strip():  # trailers, none expected
                        pass
                    return
                yield self._exactly(size)
                self._exactly(2)  # the chunk's CRLF
        length = self.headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise BadReply(f"Content-Length {length[:20]!r}")
            yield self._exactly(int(length))
            return
        while data := self._file.read1(65536):
            yield data

    def read(self) -> bytes:
        """The whole body."""
        return b"".join(self.pieces())

    def lines(self) -> Iterator[bytes]:
        """The body's lines (NDJSON), each as soon as its newline has arrived."""
        pending = b""
        for piece in self.pieces():
            pending += piece
            *whole, pending = pending.split(b"\n")
            yield from whole
        if pending:
            yield pending


class Connection:
    """One request and its reply over a plain socket (``http.client`` would cost 20 ms)."""

    def __init__(self, host: str, port: int, timeout: float, context: Any = None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.context = context  # an ssl.SSLContext for HTTPS, None for plain HTTP
        self.sock: Any = None  # a _socket.socket, or what `secure` made of it

    def connect(self) -> None:
        sock = dial(self.host, self.port, self.timeout)
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            self.sock = self.secure(sock)
        except BaseException:
            sock.close()
            raise

    def secure(self, sock: _socket.socket) -> Any:
        """``sock`` wrapped in TLS when there is a context; plain HTTP keeps it as it is.

        The reader needs only ``recv``, ``sendall``, ``settimeout`` and
        ``close``, which an ``ssl.SSLSocket`` has too.
        """
        if self.context is None:
            return sock
        import socket  # only for HTTPS: socket.py's enum tables cost start-up

        plain = socket.socket(fileno=sock.detach())
        try:
            plain.settimeout(self.timeout)
            return self.context.wrap_socket(plain, server_hostname=self.host)
        except BaseException:
            plain.close()
            raise

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> Response:
        if self.sock is None:
            self.connect()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body or b'')}")
        head.append("Connection: close")
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        return Response(Reader(self.sock))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


class Client:
    """One master's control API: JSON requests and an NDJSON stream reader."""

    def __init__(
        self,
        api: str,
        token: str | CommandError,
        timeout: float = TIMEOUT,
        ca: str | os.PathLike[str] | None = None,
    ) -> None:
        self.api = api
        host, self.port = split_address(api)
        # Served over TLS off loopback; on every address, dialled here on loopback.
        self.tls = not is_loopback(host)
        self.host = from_here(host)
        self.token = token  # or why there is none: reported once the master is reachable
        self.timeout = timeout
        self.ca = ca  # the cluster CA's certificate, for an API off loopback (TLS)

    @classmethod
    def from_args(cls, api: str | None, state: str | None) -> Client:
        demo = _demo_state() if api is None and state is None else None
        sd = demo or _state_path(state)
        address = find_api(api, sd)
        try:
            token: str | CommandError = find_token(sd)
        except CommandError as e:
            token = e
        return cls(address, token, ca=os.path.join(sd, "tls", "ca.crt"))

    # --- plumbing -----------------------------------------------------------
    def _unreachable(self, e: BaseException, connected: bool = False) -> Unreachable:
        hint = " (is `corral master` running?)" if isinstance(e, ConnectionRefusedError) else ""
        return Unreachable(f"cannot reach the master at {self.api}: {_why(e)}{hint}", connected)

    def _connection(self, timeout: float) -> Connection:
        """Plain HTTP on loopback; elsewhere HTTPS that trusts only the cluster CA."""
        if not self.tls:
            return Connection(self.host, self.port, timeout)
        import ssl

        ca = os.fspath(self.ca) if self.ca is not None else None
        if ca is None or not os.path.exists(ca):
            raise CommandError(
                f"the API at {self.api} is served over TLS, and the cluster CA's certificate "
                f"{ca or 'STATE_DIR/tls/ca.crt'} is not here (copy it, or use --state-dir)"
            )
        try:
            ctx = ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as e:
            raise CommandError(f"cannot use the CA certificate {ca}: {e}") from None
        return Connection(self.host, self.port, timeout, context=ctx)

    def _open(
        self, method: str, path: str, body: Any = None, timeout: float | None = None
    ) -> tuple[Connection, Response]:
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
            data = quickjson.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            resp = conn.request(method, path, headers, data)
        except (OSError, BadReply) as e:
            connected = conn.sock is not None
            conn.close()
            raise self._unreachable(e, connected) from None
        if resp.status >= 400:
            try:
                raw = resp.read()
            except (OSError, BadReply):
                raw = b""
            finally:
                conn.close()
            raise ApiError(self._error_text(resp.status, raw), resp.status)
        return conn, resp

    @staticmethod
    def _error_text(status: int, raw: bytes) -> str:
        try:
            message = str(quickjson.loads(raw)["error"])
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
        except (OSError, BadReply) as e:
            raise self._unreachable(e, connected=True) from None
        finally:
            conn.close()
        try:
            return quickjson.loads(raw)
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
            lines = resp.lines()
            while True:
                try:
                    line = next(lines, None)
                except (OSError, BadReply) as e:
                    raise self._unreachable(e) from None
                if line is None:
                    return
                if line.strip():
                    try:
                        yield quickjson.loads(line)
                    except ValueError:
                        raise Unreachable(f"the master at {self.api} sent a bad line") from None
        finally:
            conn.close()
