"""The process supervisor: launch, watch, record, re-adopt and signal programs.

A process's life, as the supervisor sees it (the states and every edge
between them are in `daemon.states`; each change goes through
`states.transition`)::

    launch --------------------------> running (on its way to the exec)
    alive  -- /proc read ------------> running/sleeping/stopped/zombie  refresh
    alive  -- shim's exit record ----> exited | killed          _settle
    alive  -- ended, no record ------> unknown                  _mark_unknown
    (restart) record + exit record --> exited | killed          adopt
    (restart) same boot, same start -> alive again, watched     adopt
    (restart) otherwise -------------> unknown (persisted)      adopt

Launch requests are checked and made into specs by `daemon.spec`.

Processes are watched through pidfds on the event loop; the shim (see
`daemon.shim`) is watched rather than the program, because only it can
``wait4`` the program and so learn its real exit status.  Shims come from
the forker (`daemon.forker`): the daemon itself never forks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from corral.daemon import procfs, records, shim, states
from corral.daemon.beneath import StoreError
from corral.daemon.errors import Refusal
from corral.daemon.forker import SPARES, Forker, ForkerGone
from corral.daemon.records import ExitRecord, LaunchRecord
from corral.daemon.shim import Usage, own_children_usage
from corral.daemon.spec import make_specs
from corral.daemon.store import AppStore
from corral.transport.messages import ProcInfo, ProcSample

SIGNALS = {
    s.name: s
    for s in (
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGKILL,
        signal.SIGSTOP,
        signal.SIGCONT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    )
}
# Making a spare (two forks and a warm-up: milliseconds of CPU) waits until
# this launch's reply, exec and start-up are out of the way: beside them on
# two vCPUs it took the launch reply from ~2 to ~4 ms.  A launch that finds
# no spare asks for one at once (see Forker.take).
REFILL_AFTER = 0.005  # seconds
# With a spare still ready, the rest wait for a pause in the launches: a
# job's replicas arrive together, and forking beside them slows them all.
TOP_UP_AFTER = 0.02  # seconds
SPARE_TIMEOUT = 10.0  # a spare comes within milliseconds unless the box is dying
# The kernel's RSS counters are per-CPU and approximate: the seed's peak as
# wait4 folds it in can exceed the figure the seed read just before its exec.
INHERITED_SLACK = 1 << 20  # bytes
FIRST_SAMPLE_AFTER = 0.005  # seconds after the exec: the loader has mapped the program
# The history rule until a master announces its own (Welcome.keep_ended*):
# ended processes remembered (records on disk), newest first, none older.
KEEP_ENDED = 500
KEEP_ENDED_FOR = 7 * 86400.0


Told = Callable[[list[ProcInfo]], None]


class SupervisorError(Refusal):
    """A request the supervisor refuses; the message goes to the master."""


@dataclass
class Proc:
    """One launched process: its record, its public info, and its watch."""

    rec: LaunchRecord
    info: ProcInfo  # its state moves by states.transition only
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    pidfd: int | None = None
    report: int | None = None  # a new launch's report pipe, until its seed has execed


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"SIG{num}"


def new_info(rec: LaunchRecord) -> ProcInfo:
    """A new process's info, in the state every process is born in (`states.BORN`)."""
    return ProcInfo(
        launch=rec.launch,
        pid=rec.pid,
        app=rec.app,
        argv=list(rec.argv),
        state=states.BORN,
        started_at=rec.started_at,
        key=rec.key,
    )


class Supervisor:
    """Owns every process this worker launched, past and present.

    ``on_change(info)`` is called when a process ends (or is found ended);
    launches are reported by the reply to the launch request instead.
    """

    def __init__(
        self, root: Path, store: AppStore, name: str, log: Callable[[str], None] = print
    ) -> None:
        self.root = root
        self.log = log
        self.run_dir = records.RunDir(store.fd)  # ROOT/run, walked from ROOT at each use
        self.store = store
        self.name = name
        self.boot_id = procfs.boot_id()
        self.procs: dict[str, Proc] = {}  # by launch id, oldest first
        self.on_change: Callable[[ProcInfo], None] | None = None
        self.keep_ended, self.keep_ended_for = KEEP_ENDED, KEEP_ENDED_FOR
        self._loop: asyncio.AbstractEventLoop | None = None
        self._forker = Forker(log)
        self._refill: asyncio.TimerHandle | None = None
        self._closed = False

    # ------------------------------------------------------------ start and stop

    def start(self) -> None:
        """Load ROOT/run and re-adopt what still runs (call inside the loop).

        OSError, one line, if ROOT/run cannot be used (a symlink, say).
        """
        self._loop = asyncio.get_running_loop()
        try:
            self.run_dir.create()
            recs = records.launch_records(self.run_dir)
        except StoreError as e:
            raise OSError(str(e)) from None
        for rec in recs:
            self._adopt(rec)
        try:
            self._forker.start(self.store.fd)
        except OSError as e:  # launches will try again
            self.log(f"cannot start the forker: {e}")

    def close(self) -> None:
        """Stop watching; the programs themselves keep running."""
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
        for proc in self.procs.values():
            self._unwatch(proc)
            self._unwatch_report(proc)
        self._forker.close()

    def _adopt(self, rec: LaunchRecord) -> None:
        """A record found at start: the process is born, then moved on by what is found."""
        proc = Proc(rec, new_info(rec))
        self.procs[rec.launch] = proc
        ex = records.load_exit(self.run_dir, rec.launch)
        if ex is not None:
            self._settle(proc, ex)
        elif rec.unknown_at is not None:
            self._set_unknown(proc, rec.unknown_at)
        elif rec.boot_id != self.boot_id:
            self._mark_unknown(proc)
        else:
            self._watch(proc)
            self.refresh(proc)

    # ------------------------------------------------------------ launch

    async def launch(
        self,
        app: str,
        argv: list[str],
        env: dict[str, str],
        key: str = "",
        workdir: str = "",
        told: Told | None = None,
    ) -> ProcInfo:
        """Start ``argv`` for ``app``; its info at once, else a Refusal saying why.

        ``key`` (the request's) is kept in its record and info; ``workdir``
        (``jobs/ID/INDEX``) is its working directory inside the app dir.

        The reply does not wait for the exec: the pid is the seed's, which
        becomes the program (see `daemon.shim`), and what the exec would
        refuse is refused here first (see `daemon.spec`).  ``told`` (see
        `launch_many`) may send it before the seed is even handed its spec.
        """
        return (await self.launch_many(app, argv, env, [(key, workdir, {})], told))[0]

    async def launch_many(
        self,
        app: str,
        argv: list[str],
        env: dict[str, str],
        items: Sequence[tuple[str, str, dict[str, str]]],
        told: Told | None = None,
    ) -> list[ProcInfo]:
        """`launch` ``argv`` once per item ``(key, workdir, own_env)``: every one, or none.

        Every check is made, every working directory and log made and a
        spare taken for each before any is handed its spec, so a refusal
        (a Refusal saying why) starts nothing.  Their infos, in order.

        Once every seed has its spec (and would run it even if this daemon
        died now), ``told(infos)`` is called, and only then are the seeds
        let go: a reply sent from there is not held up by programs starting
        beside it.  A seed found gone (killed meanwhile) is a process that
        ended before its exec: its shim records how, as for any other end.
        """
        specs = make_specs(self.store, app, argv, env, self.boot_id, self._taken, items)
        for spec in specs:
            self._make_log(spec)
        spares = await self._take(len(specs))
        try:
            datas = [shim.encode_spec(spec) for spec in specs]
            try:
                for spare, data in zip(spares, datas, strict=True):
                    shim.check_room(spare, data)
            except shim.SpecTooLarge as e:
                self._forker.give_back(spares)
                raise SupervisorError(str(e)) from None
            procs = [
                self._adopt_spare(spec, spare) for spec, spare in zip(specs, spares, strict=True)
            ]
            given = []
            try:  # once given, a spec runs: every seed given one goes, whatever happens
                for proc, spare, data in zip(procs, spares, datas, strict=True):
                    if not shim.give(spare, data):
                        self.log(f"{proc.rec.launch}: its seed was gone before it got its spec")
                    given.append(spare)
                infos = [proc.info for proc in procs]
                if told is not None:
                    told(infos)
            finally:
                for spare in given:
                    shim.go(spare)
        finally:
            self._arm_refill()
        return infos

    def _make_log(self, spec: shim.Spec) -> None:
        """Create the launch's log.

        The log exists before the pid is told: a program stopped before its
        seed reached the exec still has one (empty), as `logs` and rm's
        "logs kept" expect.
        """
        log = self.store.log_path(spec.app, spec.launch)
        try:
            os.close(log.open(shim.LOG_FLAGS, shim.PRIVATE))
        except OSError as e:
            raise SupervisorError(f"launch failed: cannot create {log}: {e.strerror}") from None

    def _adopt_spare(self, spec: shim.Spec, spare: shim.Spare) -> Proc:
        """The process ``spare`` becomes with ``spec``, known and watched from now on."""
        rec = records.launch_record(spec, (spare.pid, spare.start), (spare.seed, spare.seed_start))
        proc = Proc(rec, new_info(rec), report=spare.report)
        self.procs[rec.launch] = proc
        self._watch_fd(proc, spare.pidfd, self._shim_ended)
        assert self._loop is not None
        self._loop.add_reader(spare.report, self._exec_report, proc)
        return proc

    def _arm_refill(self) -> None:
        """After a launch (or a batch): new spares once it is out of the way."""
        assert self._loop is not None
        # Once per burst: a refill armed by an earlier launch waits for this one.
        if self._refill is not None:
            self._refill.cancel()
        if self._forker.has_spare():  # the rest once launches pause
            self._refill = self._loop.call_later(TOP_UP_AFTER, self._refilled, SPARES)
        else:  # one for the next launch, soon; the rest once launches pause
            self._refill = self._loop.call_later(REFILL_AFTER, self._refilled, 1)

    def _refilled(self, spares: int) -> None:
        self._refill = None
        self._forker.refill(spares)
        if spares < SPARES:
            assert self._loop is not None
            self._refill = self._loop.call_later(TOP_UP_AFTER, self._refilled, SPARES)

    def _taken(self, launch: str) -> bool:
        """Whether the launch id is in use: by a process here, or by a record in ROOT/run."""
        return launch in self.procs or records.exists(self.run_dir, launch)

    async def _take(self, count: int) -> list[shim.Spare]:
        """``count`` spares, or none (those taken go back) and a SupervisorError."""
        spares: list[shim.Spare] = []
        try:
            for _ in range(count):
                spares.append(await self._forker.take(SPARE_TIMEOUT))
        except (ForkerGone, OSError, TimeoutError) as e:
            self._forker.give_back(spares)
            why = e or "timed out"
            raise SupervisorError(f"launch failed: no shim to start it ({why})") from None
        except BaseException:
            self._forker.give_back(spares)
            raise
        return spares

    def _exec_report(self, proc: Proc) -> None:
        """The seed's report pipe is readable: EOF means it execed, "err N" that it could not.

        The report is one write of a few bytes, so one read takes it whole.
        """
        assert proc.report is not None
        try:
            data = os.read(proc.report, 256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._unwatch_report(proc)
        if not data:
            # A first sample of the program's own memory: one that ends
            # before any heartbeat still has its peak to report (its wait4
            # peak is the seed's, see _settle).  Not at the exec itself: the
            # loader has mapped nothing yet, and a shell read 12K.
            assert self._loop is not None
            self._loop.call_later(FIRST_SAMPLE_AFTER, self.refresh, proc)
            return
        try:
            why = os.strerror(shim.parse_report(data))
        except ValueError as e:
            why = str(e)
        self.log(f"{proc.rec.launch}: cannot execute {proc.rec.argv[0]!r}: {why}")

    # ------------------------------------------------------------ watching

    def _watch(self, proc: Proc) -> None:
        """Watch the shim (it records the end); if it is gone, settle now."""
        rec = proc.rec
        if not self._watch_pid(proc, rec.shim, rec.shim_start, self._shim_ended):
            self._shim_ended(proc)

    def _watch_pid(self, proc: Proc, pid: int, start: int, then: Callable[[Proc], None]) -> bool:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        # Checked after opening: the pidfd pins the process, so a pid reused
        # in between cannot pass for ours.
        if not procfs.is_same(pid, start):
            os.close(fd)
            return False
        self._watch_fd(proc, fd, then)
        return True

    def _watch_fd(self, proc: Proc, fd: int, then: Callable[[Proc], None]) -> None:
        """Call ``then(proc)`` once the process behind pidfd ``fd`` (now ours) ends."""
        proc.pidfd = fd
        assert self._loop is not None
        self._loop.add_reader(fd, self._fired, proc, then)

    def _unwatch_report(self, proc: Proc) -> None:
        self._drop_reader(proc.report)
        proc.report = None

    def _unwatch(self, proc: Proc) -> None:
        self._drop_reader(proc.pidfd)
        proc.pidfd = None

    def _drop_reader(self, fd: int | None) -> None:
        """Stop watching ``fd`` and close it (None: nothing to do)."""
        if fd is not None:
            assert self._loop is not None
            self._loop.remove_reader(fd)
            os.close(fd)

    def _fired(self, proc: Proc, then: Callable[[Proc], None]) -> None:
        # Shims are the forker's children (it has them reaped), programs the
        # shims': the daemon has none to reap.
        self._unwatch(proc)
        then(proc)

    def _shim_ended(self, proc: Proc) -> None:
        ex = records.load_exit(self.run_dir, proc.rec.launch)
        if ex is not None:
            self._settle(proc, ex)
            return
        # The shim died unrecorded (killed?); the program may live on.
        rec = proc.rec
        st = procfs.stat(rec.pid)
        alive = st is not None and st.start == rec.start and st.state != "zombie"
        if not (alive and self._watch_pid(proc, rec.pid, rec.start, self._app_ended)):
            self._app_ended(proc)

    def _app_ended(self, proc: Proc) -> None:
        ex = records.load_exit(self.run_dir, proc.rec.launch)
        if ex is not None:
            self._settle(proc, ex)
        else:
            self._mark_unknown(proc)

    # ------------------------------------------------------------ endings

    def _settle(self, proc: Proc, ex: ExitRecord) -> None:
        """The shim recorded the end: take the real reason and rusage."""
        info = proc.info
        killed = os.WIFSIGNALED(ex.status)
        if not states.transition(info, "killed" if killed else "exited", self.log):
            return  # it had ended already: its end is told once
        if killed:
            info.signal = signal_name(os.WTERMSIG(ex.status))
            info.core_dumped = os.WCOREDUMP(ex.status)
        else:
            info.exit_code = os.WEXITSTATUS(ex.status)
        info.ended_at = ex.ended_at
        # wait4's figures: the program's and its reaped descendants'.  The
        # live ones counted the tree as it ran (see refresh), which may hold
        # descendants orphaned at the end: what was shown is never taken back.
        info.cpu_user = max(info.cpu_user, ex.utime)
        info.cpu_sys = max(info.cpu_sys, ex.stime)
        # A wait4 peak no higher than the seed's own is the seed's, inherited
        # at exec (see procfs.mem): keep the peak sampled while it ran.
        if ex.maxrss > ex.base + INHERITED_SLACK:
            info.max_rss = ex.maxrss
        info.rss = 0
        self._ended(proc)

    def _mark_unknown(self, proc: Proc) -> None:
        """Ended with nobody to record how; persisted so a restart agrees."""
        self._set_unknown(proc, time.time(), persist=True)

    def _set_unknown(self, proc: Proc, when: float, persist: bool = False) -> None:
        if not states.transition(proc.info, "unknown", self.log):
            return  # it had ended already: its end is told once
        if persist:  # before _ended, whose pruning may forget the record
            proc.rec.unknown_at = when
            with contextlib.suppress(OSError, StoreError):
                records.save_launch(self.run_dir, proc.rec)
        proc.info.ended_at = when
        proc.info.rss = 0
        self._ended(proc)

    def _ended(self, proc: Proc) -> None:
        proc.ended.set()
        self.prune()
        if self.on_change is not None:
            self.on_change(proc.info)

    def set_history(self, keep: int, keep_for: float) -> None:
        """Adopt the master's history rule (sane values only) and apply it."""
        if 0 <= keep <= 1_000_000 and 0 < keep_for < float("inf"):
            self.keep_ended, self.keep_ended_for = keep, keep_for
        self.prune()

    def prune(self) -> None:
        """Forget ended processes past the history rule, oldest end first, as the master does."""
        ended = [p for p in self.procs.values() if not p.info.alive]
        ended.sort(key=lambda p: (p.info.ended_at or 0.0, p.rec.launch))
        cutoff = time.time() - self.keep_ended_for
        excess = max(0, len(ended) - self.keep_ended)
        for i, proc in enumerate(ended):
            ended_at = proc.info.ended_at
            if i < excess or (ended_at is not None and ended_at < cutoff):
                del self.procs[proc.rec.launch]
                records.forget(self.run_dir, proc.rec.launch)

    # ------------------------------------------------------------ queries

    async def children_usage(self) -> Usage:
        """``getrusage(RUSAGE_CHILDREN)`` of this daemon and its forker, together."""
        return own_children_usage() | await self._forker.children_usage()

    def find(self, pid: int) -> Proc | None:
        """The process with ``pid``: the alive one, else the latest launch."""
        found = [p for p in self.procs.values() if p.rec.pid == pid]
        alive = [p for p in found if p.info.alive]
        best = alive or found
        return best[-1] if best else None

    def refresh(self, proc: Proc) -> ProcInfo:
        """Update a live process's state, CPU and memory from /proc."""
        info = proc.info
        if not info.alive:
            return info
        st = procfs.stat(info.pid)
        if st is None or st.start != proc.rec.start:
            return info  # it just ended; the watch will say how
        states.transition(info, st.state, self.log)
        # The program and its descendants (see procfs.tree_cpu), never going
        # back: a child reaped between two reads, or an orphan leaving the
        # tree, must not make the figure dip.
        cpu = procfs.tree_cpu(info.pid, st)
        info.cpu_user = max(info.cpu_user, cpu.user)
        info.cpu_sys = max(info.cpu_sys, cpu.sys)
        if proc.report is None:  # before the exec, the memory is the seed's
            info.rss, hwm = procfs.mem(info.pid)
            info.max_rss = max(info.max_rss, hwm)  # a zombie reads 0: keep the peak seen
        return info

    def infos(self) -> list[ProcInfo]:
        """Every known process, live ones freshly sampled."""
        return [self.refresh(p) for p in self.procs.values()]

    def alive(self, app: str | None = None) -> list[Proc]:
        return [
            p for p in self.procs.values() if p.info.alive and (app is None or p.rec.app == app)
        ]

    def samples(self) -> list[ProcSample]:
        """One compact sample per live process, for the heartbeat."""
        out = []
        for proc in self.alive():
            i = self.refresh(proc)
            out.append(ProcSample(i.pid, i.state, i.cpu_user, i.cpu_sys, i.rss, i.max_rss))
        return out

    # ------------------------------------------------------------ signals

    def signal(self, pid: int, name: str) -> tuple[bool, str, ProcInfo]:
        """Signal ``pid``'s process group: (delivered, message, info)."""
        sig = SIGNALS.get(name)
        if sig is None:
            raise SupervisorError(f"unknown signal {name!r} (use one of {', '.join(SIGNALS)})")
        proc = self.find(pid)
        if proc is None:
            raise SupervisorError(f"no such process: {pid}")
        if not proc.info.alive:
            return False, f"{self.name}:{pid} already {proc.info.reason}", proc.info
        if not self._kill(proc, sig):
            return False, f"{self.name}:{pid} has already ended", proc.info
        return True, "", self.refresh(proc)

    def _kill(self, proc: Proc, sig: int) -> bool:
        """Signal the group (pgid == pid: the program called setsid)."""
        pid = proc.rec.pid
        if not procfs.is_same(pid, proc.rec.start):
            return False
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            try:  # it left its own group: signal the process at least
                os.kill(pid, sig)
            except ProcessLookupError:
                return False
        return True

    async def stop_app(self, app: str, grace: float = 3.0) -> list[int]:
        """SIGINT every live process of ``app``, SIGKILL after ``grace``; their pids."""
        procs = self.alive(app)
        for proc in procs:
            self._kill(proc, signal.SIGINT)
        if not await _all_ended(procs, grace):
            for proc in procs:
                if proc.info.alive:
                    self._kill(proc, signal.SIGKILL)
            await _all_ended(procs, 2.0)
        return [p.rec.pid for p in procs]

    def forget_app(self, app: str) -> None:
        """Drop the ended processes of ``app`` (its logs are gone)."""
        for proc in list(self.procs.values()):
            if proc.rec.app == app and not proc.info.alive:
                del self.procs[proc.rec.launch]
                records.forget(self.run_dir, proc.rec.launch)


async def _all_ended(procs: list[Proc], timeout: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.gather(*(p.ended.wait() for p in procs)), timeout)
    except TimeoutError:
        return False
    return True
