"""transport.limits: the open-files limit raised at start, and a reserve kept free."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from corral.transport.limits import (
    FdBudget,
    fd_headroom,
    nofile_limit,
    open_fd_count,
    raise_nofile_limit,
    start_server,
)

REPO = Path(__file__).resolve().parents[2]


def run_limited(soft: int, hard: int, code: str) -> object:
    """Run ``code`` (which prints JSON) in a Python whose open-files limit is (soft, hard)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=limit, cwd=REPO,
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_raise_nofile_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    code = (
        "import json, resource; from transport.limits import raise_nofile_limit as r;"
        "a = r(); b = r(); print(json.dumps([a, b, resource.getrlimit(resource.RLIMIT_NOFILE)]))"
    )
    assert run_limited(256, hard, code) == [hard, hard, [hard, hard]]


def test_raise_nofile_limit_at_the_hard_limit_changes_nothing() -> None:
    code = "import json; from transport.limits import raise_nofile_limit as r; print(r())"
    assert run_limited(300, 300, code) == 300


def test_fd_headroom_counts_what_is_open() -> None:
    raise_nofile_limit()
    before = open_fd_count()
    assert before is not None and fd_headroom() == nofile_limit() - before
    files = [open(os.devnull) for _ in range(50)]  # noqa: SIM115
    try:
        assert open_fd_count() == before + 50
    finally:
        for f in files:
            f.close()


def test_a_budget_refuses_inside_the_reserve_and_counts_sparingly() -> None:
    free = [200]
    counts = [0]
    now = [0.0]

    def headroom() -> int:
        counts[0] += 1
        return free[0]

    budget = FdBudget(reserve=64, recount_after=1.0, clock=lambda: now[0], headroom=headroom)
    allowed = 0
    while budget.allow():
        allowed += 1
        free[0] -= 1  # each connection allowed holds one more
    assert allowed == 200 - 64 + 1 and free[0] == 63  # refused once fewer than 64 were free
    assert counts[0] < 80  # far fewer counts than connections while far from the floor
    free[0] = 150  # connections closed: noticed at the next count
    assert budget.allow()


def test_a_budget_does_not_count_more_often_than_its_cost_allows() -> None:
    now = [0.0]
    counts = [0]

    def slow_headroom() -> int:  # a count that takes 10 ms
        counts[0] += 1
        now[0] += 0.01
        return 10

    budget = FdBudget(reserve=64, clock=lambda: now[0], headroom=slow_headroom)
    for _ in range(1000):
        assert not budget.allow()  # deep in the reserve
        now[0] += 0.0001
    assert counts[0] <= 1 + (1000 * 0.0001 + 0.01) / 0.5  # at most one count per 50 x 10 ms


@pytest.mark.parametrize("soft", [128])
def test_a_budget_under_a_real_low_limit_stops_before_emfile(soft: int) -> None:
    code = f"""
import json, os
from corral.transport.limits import FdBudget
budget = FdBudget(reserve=16)
held = []
while True:  # as a server does: accept (here, open), then ask
    fd = os.open(os.devnull, os.O_RDONLY)
    if not budget.allow():
        os.close(fd)
        break
    held.append(fd)
free = {soft} - (len(os.listdir("/proc/self/fd")) - 1)
print(json.dumps([len(held), free]))
"""
    held, free = run_limited(soft, soft, code)  # type: ignore[misc]
    assert held > 64 and 16 <= free <= 17


async def test_start_server_turns_away_what_the_budget_refuses_and_serves_the_rest() -> None:
    free = [1000]
    now = [0.0]  # moves only between connections: no count looks too costly to repeat
    budget = FdBudget(reserve=10, recount_after=0.5, clock=lambda: now[0], headroom=lambda: free[0])
    served: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(await reader.readline())
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    server = await start_server(echo, "127.0.0.1", 0, budget=budget, refusal=b"busy\n")
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        assert await asyncio.wait_for(reader.read(), 5) == b"ok\n"
        writer.close()
        free[0] = 5  # inside the reserve: turned away at the accept, the callback never runs
        now[0] += 1.0  # past recount_after: the next accept counts again
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b"busy\n"
        writer.close()
        assert served == [b"hello\n"] and server.refused == 1
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_start_server_speaks_tls_when_given_a_context(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"secret " + await reader.readline())
        await writer.drain()
        writer.close()

    server = await start_server(hello, "127.0.0.1", 0, ssl=server_ctx, ssl_handshake_timeout=5)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        writer.write(b"hi\n")
        assert await asyncio.wait_for(reader.read(), 5) == b"secret hi\n"
        writer.close()
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
