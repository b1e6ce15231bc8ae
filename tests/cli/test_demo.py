"""`corral demo`: it comes up, runs programs, another shell reaches it with nothing set,
and Ctrl-C (or q in the dashboard) leaves nothing behind.

Every demo here runs with HOME and XDG_RUNTIME_DIR in the test's own
directory, so the pointer it leaves for other shells is the test's alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import queue
import re
import signal
import socket
import struct
import subprocess
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral import client
from tests.cli.conftest import REPO, base_env, corral_argv, pid_gone, run_corral, wait_for


def home_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A user's environment with its home and runtime dir under ``tmp_path``, no CORRAL_*."""
    env = base_env(**extra)
    for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR"):
        env.pop(var, None)
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
    env.update(HOME=str(tmp_path / "home"), XDG_RUNTIME_DIR=str(tmp_path / "run"))
    env.update(extra)
    return env


def pointer_of(tmp_path: Path) -> Path:
    return tmp_path / "run" / "corral" / "demo.json"


class Lines:
    """A process's stdout, line by line, read on a thread so waits can have deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.stream = proc.stdout
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                line = self._q.get(timeout=0.05)
                if line is None:
                    return
                self.seen.append(line)

    def wait(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[re.Match[str]]:
        """The first ``count`` lines matching ``pattern`` (searching all seen so far)."""

        def found() -> list[re.Match[str]] | None:
            self._drain()
            hits = [m for line in self.seen if (m := re.search(pattern, line))]
            return hits[:count] if len(hits) >= count else None

        return wait_for(found, f"{count} line(s) matching {pattern!r}; saw {self.seen}", timeout)

    def close(self) -> None:
        self._thread.join(10)
        self.stream.close()


@contextlib.contextmanager
def headless_demo(
    tmp_path: Path, workers: int = 2
) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    """A real ``corral demo --headless`` with its own HOME; Ctrl-C (then SIGKILL) at the end."""
    with open(tmp_path / "demo.err", "w") as err:
        proc = subprocess.Popen(
            corral_argv("demo", "--headless", "--workers", str(workers)),
            env=home_env(tmp_path),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines = Lines(proc)
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        lines.close()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
    with headless_demo(tmp_path) as running:
        yield running


def test_demo_starts_workers_and_ctrl_c_leaves_nothing(
    demo: tuple[subprocess.Popen[str], Lines],
) -> None:
    proc, lines = demo
    (api,) = lines.wait(r"control API on http://(\S+)")
    (state,) = lines.wait(r"state in (\S+)")
    workers = lines.wait(r"started worker (node\d) \(pid (\d+)", count=2)
    joined = lines.wait(r"node\.joined\s+(node\d) joined", count=2)
    assert sorted(m.group(1) for m in joined) == ["node1", "node2"]
    tmp = Path(state.group(1)).parent
    assert tmp.name.startswith("corral-demo-")

    env = base_env(CORRAL_STATE_DIR=state.group(1))
    r = run_corral("launch", "--api", api.group(1), "--all", "--", "sleep", "30", env=env)
    assert r.status == 0, r.err
    keys = r.out.split()
    assert sorted(k.split(":")[0] for k in keys) == ["node1", "node2"]
    programs = [int(k.split(":")[1]) for k in keys]
    assert not any(pid_gone(pid) for pid in programs)

    # A shell's command that merely exported the demo's state dir is not the demo's to kill.
    bystander = subprocess.Popen(["sleep", "30"], env=env, stdin=subprocess.DEVNULL)
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
    lines.wait(r"corral demo: stopped 2 workers and 2 programs")
    for pid in programs + [int(m.group(2)) for m in workers]:
        assert pid_gone(pid), pid
    assert not tmp.exists()
    # Nor any other process of the demo (the program's shims name the roots in argv).
    needle = str(tmp).encode()
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            assert needle not in (entry / "cmdline").read_bytes(), entry.name


def test_another_shell_reaches_the_demo_with_no_variable_set(
    tmp_path: Path, demo: tuple[subprocess.Popen[str], Lines]
) -> None:
    proc, lines = demo
    (state,) = lines.wait(r"state in (\S+)")
    lines.wait(r"in another shell: corral nodes$")
    lines.wait(r"node\.joined\s+(node\d) joined", count=2)
    pointer = pointer_of(tmp_path)
    assert pointer.stat().st_mode & 0o777 == 0o600
    assert json.loads(pointer.read_text())["state_dir"] == state.group(1)

    r = run_corral("nodes", "--json", env=home_env(tmp_path))  # a second shell: nothing set
    assert r.status == 0, r.err
    assert sorted(n["name"] for n in r.json()["nodes"]) == ["node1", "node2"]

    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    lines.wait(r"corral demo: stopped 2 workers and 0 programs")
    assert not pointer.exists()
    r = run_corral("nodes", env=home_env(tmp_path))  # the pointer is gone with the demo
    assert r.status == 1 and r.err.startswith("corral: cannot reach the master"), r.err


def test_one_worker_is_one_worker(tmp_path: Path) -> None:
    with headless_demo(tmp_path, workers=1) as (proc, lines):
        lines.wait(r"corral demo: 1 worker under ")
        lines.wait(r"node\.joined\s+node1 joined")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        lines.wait(r"corral demo: stopped 1 worker and 0 programs")
        assert not any("1 workers" in line for line in lines.seen)


# --- the pointer, in this process -------------------------------------------------------
@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process as a user with nothing configured; returns the runtime dir."""
    for name, value in home_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    for name in ("XDG_STATE_HOME", "CORRAL_STATE_DIR", "CORRAL_API", "CORRAL_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "run"


def point_at(runtime: Path, pid: int, start: int | None, state: Path) -> None:
    path = runtime / "corral" / "demo.json"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "start": start, "state_dir": str(state)}))
    path.chmod(0o600)


def test_a_live_demo_is_found_when_nothing_else_is_configured(
    user: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "demo-state"
    point_at(user, os.getpid(), client.start_ticks(os.getpid()), state)
    assert client.demo_state_dir() == state
    monkeypatch.setenv("CORRAL_STATE_DIR", str(tmp_path / "elsewhere"))
    assert client.demo_state_dir() is None  # a variable names a master: it wins


def test_a_dead_or_reused_pid_is_not_a_demo(user: Path, tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    point_at(user, ended.pid, 1, tmp_path / "gone")
    assert client.live_demo() is None and client.demo_state_dir() is None
    me = client.start_ticks(os.getpid())
    assert me is not None
    point_at(user, os.getpid(), me + 1, tmp_path / "gone")  # our pid, another start: reused
    assert client.demo_state_dir() is None


def test_a_running_default_master_comes_before_the_demo(user: Path, tmp_path: Path) -> None:
    point_at(user, os.getpid(), client.start_ticks(os.getpid()), tmp_path / "demo-state")
    default = tmp_path / "home" / ".local" / "state" / "corral"
    default.mkdir(parents=True)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        host, port = listening.getsockname()
        (default / "api").write_text(f"{host}:{port}\n")
        assert client.demo_state_dir() is None
    # The same file once nothing listens there (a master that stopped): the demo again.
    assert client.demo_state_dir() == tmp_path / "demo-state"


# --- the dashboard, on a terminal --------------------------------------------------------
class Terminal:
    """A pseudo-terminal whose output is read on a thread (so the program never blocks)."""

    def __init__(self, columns: int = 120, rows: int = 40) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.output = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.output += chunk

    def seen(self, text: bytes) -> bool:
        with self._lock:
            return text in self.output

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        os.close(self.slave)
        with contextlib.suppress(OSError):
            os.close(self.master)
        self._thread.join(5)


def test_the_dashboard_demo_tells_the_second_shell_and_q_ends_it(tmp_path: Path) -> None:
    term = Terminal(columns=160)
    env = home_env(tmp_path, TERM="xterm-256color")
    proc = subprocess.Popen(
        corral_argv("demo", "--workers", "2"),
        env=env,
        cwd=REPO,
        stdin=term.slave,
        stdout=term.slave,
        stderr=term.slave,  # where Textual draws
        start_new_session=True,
    )
    try:
        pointer = pointer_of(tmp_path)
        wait_for(pointer.exists, "the demo's pointer", 20)
        state = Path(json.loads(pointer.read_text())["state_dir"])

        def nodes() -> list[str] | None:
            r = run_corral("nodes", "--json", env=home_env(tmp_path))
            names = sorted(n["name"] for n in r.json()["nodes"]) if r.status == 0 else []
            return names if len(names) == 2 else None

        assert wait_for(nodes, "both demo nodes from another shell", 20) == ["node1", "node2"]
        for hint in (b"another shell: ", b"corral nodes", b"q ends the demo"):
            wait_for(lambda hint=hint: term.seen(hint), f"{hint!r} in the header")
        term.type(b"q")
        assert proc.wait(20) == 0
        assert not pointer.exists()
        assert not state.parent.exists()  # the demo's temporary directory is gone
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        term.close()


def _workers_under(tmp: Path) -> list[int]:
    """Pids of the ``corral worker`` processes whose root is under ``tmp``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in argv and any(str(tmp).encode() in a for a in argv):
            found.append(int(entry.name))
    return found


def test_a_dashboard_whose_terminal_hangs_up_ends_the_demo(tmp_path: Path) -> None:
    """Its window closed under ``make demo``: the kernel's SIGHUP goes to make alone
    (the session's leader), so the dashboard must see the hang-up for itself."""
    term = Terminal()
    proc = subprocess.Popen(
        corral_argv("demo", "--workers", "1"),
        env=home_env(tmp_path, TERM="xterm-256color"),
        cwd=REPO,
        stdin=term.slave,
        stdout=term.slave,
        stderr=term.slave,
        start_new_session=True,  # no controlling terminal: no SIGHUP comes
    )
    state = tmp_path / "unknown"
    try:
        pointer = pointer_of(tmp_path)
        wait_for(pointer.exists, "the demo's pointer", 20)
        state = Path(json.loads(pointer.read_text())["state_dir"])
        wait_for(lambda: term.seen(b"node1"), "the dashboard", 20)
        (worker,) = wait_for(lambda: _workers_under(state.parent), "the demo's worker", 20)
        os.close(term.master)  # the terminal goes away
        assert proc.wait(20) == 1
        assert not pointer.exists()
        assert not state.parent.exists()  # cleaned up: nothing of the demo left behind
        assert pid_gone(worker)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _workers_under(state.parent):  # a demo killed has left them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        term.close()


def test_a_second_demo_leaves_the_pointer_to_the_first(
    tmp_path: Path, demo: tuple[subprocess.Popen[str], Lines]
) -> None:
    first, first_lines = demo
    first_lines.wait(r"in another shell: corral nodes$")
    with open(tmp_path / "second.err", "w") as err:
        second = subprocess.Popen(
            corral_argv("demo", "--headless", "--workers", "1"),
            env=home_env(tmp_path),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    second_lines = Lines(second)
    try:
        (state,) = second_lines.wait(r"state in (\S+)")
        second_lines.wait(rf"in another shell: CORRAL_STATE_DIR={state.group(1)} corral nodes$")
        second.send_signal(signal.SIGINT)
        assert second.wait(20) == 0
        assert pointer_of(tmp_path).exists()  # still the first demo's
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
        second_lines.close()
    first.send_signal(signal.SIGINT)
    assert first.wait(20) == 0
    assert not pointer_of(tmp_path).exists()


def test_the_master_dashboard_says_what_another_shell_types(
    user: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.master.state import default_state_dir
    from corral.serve import reach_line

    assert reach_line(default_state_dir()) == "corral nodes"
    other = tmp_path / "other"
    assert reach_line(other) == f"CORRAL_STATE_DIR={other} corral nodes"
    monkeypatch.setenv("CORRAL_STATE_DIR", str(other))  # exported: other shells have it too
    assert reach_line(other) == "corral nodes"
