"""A launch request, checked and worked out into the `shim.Spec` its seed and shim run.

On the launch's critical path: plain strings, no pathlib.  What the exec
would refuse is refused here, before any spare is taken (see `daemon.exe`).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Sequence

from corral.daemon import exe as daemon_exe
from corral.daemon import jobs
from corral.daemon.errors import Refusal
from corral.daemon.shim import Spec
from corral.daemon.store import AppStore
from corral.transport.messages import valid_app_name

_PATH = os.environ.get("PATH") or os.defpath


class SpecError(Refusal):
    """A launch request refused before anything is forked; the message goes to the master."""


def make_spec(
    store: AppStore,
    app: str,
    argv: list[str],
    env: dict[str, str],
    boot_id: str,
    taken: Callable[[str], bool],
    *,
    key: str = "",
    workdir: str = "",
) -> Spec:
    """Check the request and work out everything the seed and the shim will need.

    ``taken(launch)`` says whether a launch id is in use already.
    ``workdir`` (``jobs/ID/INDEX``, see `daemon.jobs`), if any, becomes the
    program's working directory: checked here, made by its seed (see
    `AppStore.programs`).  SpecError (or StoreError, or
    `jobs.JobError`) says why it cannot run; a bad ``workdir`` is refused
    before anything is made.
    """
    return make_specs(store, app, argv, env, boot_id, taken, [(key, workdir, {})])[0]


def make_specs(
    store: AppStore,
    app: str,
    argv: list[str],
    env: dict[str, str],
    boot_id: str,
    taken: Callable[[str], bool],
    items: Sequence[tuple[str, str, dict[str, str]]],
) -> list[Spec]:
    """`make_spec` for several launches of one command, each ``(key, workdir, own_env)``.

    ``own_env``: variables of that launch alone (a job's replica index), laid
    over ``env``.  Everything is checked (every working directory included)
    before anything is made; the program is looked up once.  Each spec gets
    a launch id of its own.
    """
    if not valid_app_name(app):
        raise SpecError(f"invalid app name {app!r}")
    check_command(argv, env)
    for _, _, own in items:
        check_env(own)
    workdirs = [jobs.workdir_parts(workdir) if workdir else () for _, workdir, _ in items]
    env = launch_env(f"{store.apps_dir}/{app}", env)
    try:  # finds it, walking beneath ROOT (see daemon.beneath); makes the app's dirs
        progs = store.programs(app, argv[0], env.get("PATH") or _PATH, workdirs, make=False)
    except daemon_exe.NotExecutable as e:
        raise SpecError(f"cannot execute {argv[0]!r}: {e}") from None
    mine: set[str] = set()  # ids given in this batch, not yet anyone's

    def in_use(launch: str) -> bool:
        return launch in mine or taken(launch)

    specs = []
    for (key, _, own), parts, prog in zip(items, workdirs, progs, strict=True):
        launch = new_launch_id(in_use)
        mine.add(launch)
        spec = Spec(
            launch=launch,
            app=app,
            exe=prog.path,
            beneath=list(prog.beneath),
            script=prog.script,
            argv=list(argv),
            env={**env, **own} if own else env,
            started_at=time.time(),
            boot_id=boot_id,
            key=key,
            workdir=list(parts),
        )
        specs.append(spec)
    return specs


def check_command(argv: list[str], env: dict[str, str]) -> None:
    """Refuse what exec cannot take, before forking anything."""
    if not argv or not argv[0]:
        raise SpecError("empty command line")
    if any("\0" in a for a in argv):
        raise SpecError("command line contains a NUL byte")
    check_env(env)


def check_env(env: dict[str, str]) -> None:
    """Refuse a variable exec cannot pass on."""
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise SpecError(f"bad environment variable {key!r}")


def launch_env(app_dir: str, env: dict[str, str]) -> dict[str, str]:
    """The request's variables plus the app's lib/ first on LD_LIBRARY_PATH.

    The shim lays them over its own environment: the daemon's, less the
    cluster token (see `daemon.forker`).
    """
    old = env.get("LD_LIBRARY_PATH", os.environ.get("LD_LIBRARY_PATH"))
    lib = f"{app_dir}/lib"
    return {**env, "LD_LIBRARY_PATH": f"{lib}:{old}" if old else lib}


def new_launch_id(taken: Callable[[str], bool]) -> str:
    """Unique (``taken`` says which are not), sortable by start time, and safe as a file name."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
    while True:
        launch = f"{stamp}-{secrets.token_hex(2)}"
        if not taken(launch):
            return launch
