"""The dashboard's pure parts: command parsing and completion, counts, formatting, filters."""

from __future__ import annotations

import pytest

from corral.master import verbs
from corral.master.model import ProcView
from corral.master.verbs.base import CommandError
from corral.tui import format as fmt
from corral.tui.commands import USAGE, complete, parse
from corral.tui.tally import Tally
from corral.tui.widgets.procs import Snapshots, matches


def view(state: str = "running", **kw: object) -> ProcView:
    fields: dict[str, object] = dict(
        node="n1", pid=7, launch="L", app="web", argv=("python3", "-m", "http.server"),
        state=state, reason="", started_at=100.0, ended_at=None, exit_code=None, signal=None,
        core_dumped=False, cpu_user=0.0, cpu_sys=0.0, rss=0, max_rss=0,
    )  # fmt: skip
    fields.update(kw)
    return ProcView(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("line", "request_"),
    [
        (
            "launch --node a --node b -- sleep 60",
            {"argv": ["sleep", "60"], "nodes": ["a", "b"], "all": False, "app": None},
        ),
        (
            "launch --all --app x -- sh -c 'echo hi'",
            {"argv": ["sh", "-c", "echo hi"], "nodes": [], "all": True, "app": "x"},
        ),
        ("launch --node a sleep 1", {"argv": ["sleep", "1"], "nodes": ["a"]}),
        ("launch --node a --key k1 -- true", {"key": "k1"}),
        ("stop a:1 b:2", {"targets": ["a:1", "b:2"], "signal": "SIGINT"}),
        ("kill a:1", {"targets": ["a:1"], "signal": "SIGKILL"}),
        ("logs a:1", {"target": "a:1", "tail": 10, "offset": None, "follow": False}),
        ("logs a:1 --tail all", {"tail": None, "offset": 0}),
        ("rm web --node a --force", {"app": "web", "nodes": ["a"], "force": True, "logs": False}),
        ("rm web --all", {"app": "web", "all": True}),
        ("rm --logs web", {"app": "web", "logs": True}),
        ("ps --node a --all", {"node": "a", "all": True}),
        ("nodes", {}),
        ("usage --node a", {"node": "a"}),
        (
            "deploy /opt/hello --node a --node b --lib /opt/x.so --dry-run",
            {"file": "/opt/hello", "nodes": ["a", "b"], "libs": ["/opt/x.so"], "dry_run": True},
        ),
        (
            "deploy --all '/opt/my app' --app web --trust-host-key --force",
            {
                "file": "/opt/my app",
                "all": True,
                "app": "web",
                "trust_host_key": True,
                "force": True,
            },
        ),
    ],
)
def test_parse(line: str, request_: dict[str, object]) -> None:
    """The line is parsed by the verb's own declarations into the verb's request."""
    command = parse(line)
    assert command.verb.name == line.split()[0]
    assert {k: command.request[k] for k in request_} == request_


def test_parse_gives_each_launch_a_fresh_key() -> None:
    first, second = (parse("launch --all -- true").request["key"] for _ in range(2))
    assert first and second and first != second


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("", "empty command"),
        ("frob", "unknown command 'frob'"),
        ("stop", "the following arguments are required: NODE:PID"),
        ("stop n1", "bad process name 'n1'"),
        ("logs a:1 b:2", "unrecognized arguments: b:2"),
        ("logs a:1 --tail 99999999999", "--tail: expected a number of lines"),
        ("launch --node", "--node: expected one argument"),
        ("launch --node a --all -- x", "not allowed with argument"),
        ("launch --bogus -- x", "unrecognized arguments: --bogus"),
        ("launch --all --", "nothing to launch"),
        ("launch sleep 1", "no node chosen"),
        ("launch 'unclosed", "cannot split"),
        ("rm", "the following arguments are required: APP"),
        ("rm web --app x", "unrecognized arguments: --app"),
        ("deploy", "the following arguments are required: FILE"),
        ("deploy x --all --node a", "not allowed with argument"),
        ("deploy x y --all", "unrecognized arguments: y"),
        ("deploy x --lib", "--lib: expected one argument"),
    ],
)
def test_parse_errors_are_one_line(line: str, error: str) -> None:
    with pytest.raises(CommandError, match=error) as info:
        parse(line)
    assert "\n" not in str(info.value)
    assert info.value.status == 2


def test_usage_lines_come_from_the_declarations() -> None:
    assert USAGE["stop"] == "stop [--json] NODE:PID [NODE:PID ...]"
    assert USAGE["launch"].endswith("-- PROGRAM [ARGS...]")
    assert set(USAGE) == set(verbs.NAMES)
    with pytest.raises(CommandError, match=r"\(usage: rm "):
        parse("rm")


def test_complete_verbs_nodes_and_processes() -> None:
    nodes, procs, apps = ["alpha", "alps", "bravo"], ["alpha:1", "bravo:22"], ["web"]
    assert complete("la", nodes, procs, apps) == ("launch ", ["launch"])
    assert complete("launch --node al", nodes, procs, apps) == (
        "launch --node alp",
        ["alpha", "alps"],
    )
    assert complete("launch --node b", nodes, procs, apps) == ("launch --node bravo ", ["bravo"])
    assert complete("stop a:9 b", nodes, procs, apps) == ("stop a:9 bravo:22 ", ["bravo:22"])
    assert complete("rm w", nodes, procs, apps) == ("rm web ", ["web"])
    assert complete("kill zz", nodes, procs, apps) == ("kill zz", [])
    assert complete("rm web --l", nodes, procs, apps) == ("rm web --logs ", ["--logs"])
    assert complete("deploy ./x --node b", nodes, procs, apps) == (
        "deploy ./x --node bravo ",
        ["bravo"],
    )
    assert complete("deploy ./x --d", nodes, procs, apps) == (
        "deploy ./x --dry-run ",
        ["--dry-run"],
    )
    assert complete("deploy ./x --app w", nodes, procs, apps) == ("deploy ./x --app web ", ["web"])
    assert complete("deploy w", nodes, procs, apps) == ("deploy w", [])  # FILE: not completed
    assert complete("ps --node a", nodes, procs, apps) == ("ps --node alp", ["alpha", "alps"])
    assert complete("logs --tail 5 b", nodes, procs, apps) == (
        "logs --tail 5 bravo:22 ",
        ["bravo:22"],
    )
    assert complete("launch --all -- sl", nodes, procs, apps) == ("launch --all -- sl", [])
    assert complete("u", nodes, procs, apps) == ("usage ", ["usage"])


def test_tally_moves_rows_between_buckets() -> None:
    tally = Tally()
    tally.proc("n1:7", "running", None)
    tally.proc("n1:7", "sleeping", None)  # same bucket: counted once
    tally.proc("n1:8", "lost", None)  # its node is lost: still counted as running
    assert tally.counts["running"] == 2
    tally.proc("n1:7", "killed", None)
    assert (tally.counts["running"], tally.counts["ended"], tally.counts["failed"]) == (1, 1, 1)
    tally.proc("n1:8", "exited", 0)
    assert (tally.counts["running"], tally.counts["ended"], tally.counts["failed"]) == (0, 2, 1)
    tally.drop_proc("n1:7")
    tally.drop_proc("n1:8")
    assert +tally.counts == {}


def test_filter_words_all_match() -> None:
    p = view()
    assert matches(p, "")
    assert matches(p, "node:n1 app:web")
    assert matches(p, "state:alive http")
    assert not matches(p, "node:n2")
    assert not matches(p, "state:ended")
    assert matches(view("exited", exit_code=0), "state:exited")


def test_formats() -> None:
    assert fmt.human_bytes(512) == "512B"
    assert fmt.human_bytes(1536) == "1.5K"
    assert fmt.human_bytes(300 * 1024**2) == "300M"
    assert fmt.human_bytes(14 * 1024**2) == "14M"  # the CLI's spelling: one for both
    assert fmt.duration(0.4) == "0.4s"
    assert fmt.duration(185) == "3m05s"
    assert fmt.duration(7300) == "2h01m"
    assert fmt.sparkline((), 4) == "    "
    assert fmt.sparkline((0.0, 50.0, 100.0), 3) == " ▅█"
    assert len(fmt.sparkline(tuple(float(i) for i in range(60)), 12)) == 12
    assert str(fmt.proc_state(view(), countdown=3)) == "stopping 3s"
    assert (
        str(fmt.reason(view("killed", reason="killed by SIGSEGV, core dumped")))
        == "SIGSEGV, core dumped"
    )


def test_snapshots_pull_only_what_is_read_and_keep_the_last_when_gone() -> None:
    model = {"n1:7": view(rss=1)}
    pulls: list[str] = []

    def source(key: str) -> ProcView | None:
        pulls.append(key)
        return model.get(key)

    snaps = Snapshots(source)
    snaps.put(model["n1:7"])
    model["n1:7"] = view(rss=2)
    snaps.invalidate("n1:7")
    snaps.invalidate("n1:9")  # unknown: nothing to mark
    assert pulls == [] and "n1:9" not in snaps
    assert snaps.last("n1:7").rss == 1  # type: ignore[union-attr]
    assert snaps["n1:7"].rss == 2 and snaps["n1:7"].rss == 2
    assert pulls == ["n1:7"]  # once: the snapshot is current again
    del model["n1:7"]
    snaps.invalidate("n1:7")
    assert snaps["n1:7"].rss == 2  # gone from the model: its removal comes on its own
    assert snaps.pop("n1:7") is not None and len(snaps) == 0
