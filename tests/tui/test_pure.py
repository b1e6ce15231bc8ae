"""The dashboard's pure parts: command parsing and completion, counts, formatting, filters."""

from __future__ import annotations

import pytest

from corral.master import verbs
from corral.master.model import ProcView
from corral.master.verbs.base import CommandError
from corral.tui import format as fmt
from corral.tui.commands import USAGE, complete, parse, screen_word
from corral.tui.tally import Tally, view_kind
from corral.tui.widgets.live_table import Column, fit_columns
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


def test_launch_without_nodes_runs_on_the_selected_node() -> None:
    """``:launch -- prog`` goes where the launch dialog would: the selected node."""
    assert parse("launch -- sleep 1", node="n2").request["nodes"] == ["n2"]
    assert parse("launch --node n1 -- sleep 1", node="n2").request["nodes"] == ["n1"]
    assert parse("launch --all -- sleep 1", node="n2").request["nodes"] == []
    with pytest.raises(CommandError, match="no node chosen"):
        parse("launch -- sleep 1")  # no node selected (none alive): still an error


def test_screen_words_quit_and_help() -> None:
    assert [screen_word(w) for w in ("q", "quit", " h ", "help")] == [
        "quit",
        "quit",
        "help",
        "help",
    ]
    assert screen_word("ps") is None and screen_word("help me") is None
    assert complete("qu", [], [], []) == ("quit ", ["quit"])


def test_columns_fit_the_room_command_grows_reason_shrinks_then_columns_go() -> None:
    def columns() -> list[Column]:
        return [
            Column("key", "NODE:PID", 12, True, natural=12),
            Column("command", "Command", 40, True, natural=40, grow=1, shrink=3, min_width=12),
            Column("reason", "Reason", 20, True, natural=20, shrink=2, min_width=7),
            Column("start", "Started", 8, True, natural=8, drop=1),
        ]

    wide = columns()
    fit_columns(wide, 160)  # 88 wanted: the 72 spare cells go to Command
    assert [c.width for c in wide] == [12, 112, 20, 8]
    mid = columns()
    fit_columns(mid, 70)  # 18 short: Command gives way first, and is cut: Started goes
    assert [(c.width, c.hidden) for c in mid] == [(12, 0), (32, 0), (20, 0), (8, 1)]
    narrow = columns()
    fit_columns(narrow, 40)  # the minimums do not fit: Started goes; Command, then Reason give
    assert [(c.width, c.hidden) for c in narrow] == [(12, 0), (12, 0), (10, 0), (8, 1)]
    assert sum(c.width + 2 for c in narrow if not c.hidden) <= 40
    unknown = columns()
    fit_columns(unknown, 0)  # no room known yet: natural widths
    assert [c.width for c in unknown] == [12, 40, 20, 8]


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
    assert USAGE["stop"] == "stop [--wait] [--timeout S] [--json] NODE:PID [NODE:PID ...]"
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

    def counts() -> tuple[int, int, int]:
        return tally.counts["running"], tally.counts["ended"], tally.counts["failed"]

    tally.proc("n1:7", "running", None)
    tally.proc("n1:7", "sleeping", None)  # same bucket: counted once
    tally.proc("n1:8", "lost", None)  # its node is lost: it needs looking at
    assert counts() == (1, 0, 1)
    tally.proc("n1:7", "killed", None, "SIGINT")  # a graceful stop: ended, not failed
    assert counts() == (0, 1, 1)
    tally.proc("n1:8", "exited", 0)
    assert counts() == (0, 2, 0)
    tally.proc("n1:8", "killed", None, "SIGKILL")
    tally.proc("n1:9", "killed", None, "SIGTERM", core_dumped=True)
    tally.proc("n1:10", "exited", 3)
    assert counts() == (0, 1, 3)
    for key in ("n1:7", "n1:8", "n1:9", "n1:10"):
        tally.drop_proc(key)
    assert +tally.counts == {}


@pytest.mark.parametrize(
    ("proc", "bucket"),
    [
        (view("running"), "running"),
        (view("sleeping"), "running"),
        (view("lost"), "failed"),
        (view("exited", exit_code=0), "ended"),
        (view("exited", exit_code=3), "failed"),
        (view("killed", signal="SIGINT"), "ended"),
        (view("killed", signal="SIGTERM"), "ended"),
        (view("killed", signal="SIGKILL"), "failed"),
        (view("killed", signal="SIGSEGV", core_dumped=True), "failed"),
        (view("killed", signal="SIGINT", core_dumped=True), "failed"),
    ],
)
def test_state_words_are_the_header_buckets(proc: ProcView, bucket: str) -> None:
    """``state:running`` shows what the header counts as running (sleeping rows too), etc."""
    assert view_kind(proc) == bucket
    for word in ("running", "ended", "failed"):
        assert matches(proc, f"state:{word}") == (word == bucket)
    assert matches(proc, f"state:{proc.state}")  # the row's own word too


def test_a_graceful_stop_reads_as_one_and_not_in_red() -> None:
    stopped = view("killed", signal="SIGINT", reason="killed by SIGINT")
    assert str(fmt.reason(stopped)) == "SIGINT (stopped)"
    assert fmt.reason(stopped).style == "dim" and fmt.proc_state(stopped).style == "dim"
    crashed = view("killed", signal="SIGSEGV", reason="killed by SIGSEGV")
    assert fmt.reason(crashed).style == "red" and fmt.proc_state(crashed).style == "red"


def test_filter_words_all_match() -> None:
    p = view()
    assert matches(p, "")
    assert matches(p, "node:n1 app:web")
    assert matches(p, "state:alive http")
    assert not matches(p, "node:n2")
    assert not matches(p, "state:ended")
    assert not matches(view("lost"), "state:ended")  # lost is not ended: it may still run
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
