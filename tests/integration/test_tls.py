"""Mutual TLS on the worker channel: a real master and real workers on loopback.

Enrollment with the token, the certificate as the node's identity, refusals
before any frame is read, revocation, token rotation and renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bench.cluster import LocalCluster, wait_until
from corral.master.ca import CA
from corral.master.server import MAX_UNAUTHENTICATED_PER_HOST
from corral.transport import handshake, keys, tls
from corral.transport.auth import AuthError
from corral.transport.codec import encode
from corral.transport.connection import Connection, ConnectionClosed
from corral.transport.messages import PROTOCOL_VERSION, Hello

H = 0.5
SIXTY_ONE_DAYS = 61 * 86400


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, heartbeat=H)
    try:
        c.start_master()
        yield c
    finally:
        c.stop()


def events(c: LocalCluster) -> list[dict[str, Any]]:
    evs: list[dict[str, Any]] = c.call("GET", "/v1/events?limit=1000")["events"]
    return evs


def event_with(c: LocalCluster, text: str) -> dict[str, Any] | None:
    return next((e for e in events(c) if text in e["message"]), None)


def host_port(c: LocalCluster) -> tuple[str, int]:
    host, port = c.listen.rsplit(":", 1)
    return host, int(port)


def corral(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    argv = [sys.executable, "-m", "corral", *args, "--state-dir", str(c.state)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def start_worker(
    c: LocalCluster, name: str, token: str | None, **env: str
) -> subprocess.Popen[bytes]:
    """A worker process with ``token`` (None: no token at all) and more environment."""
    root = c.worker_root(name)
    root.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "corral", "worker", "--master", c.listen]
    argv += ["--name", name, "--root", str(root)]
    full = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    full.update(env)
    if token is not None:
        full["CORRAL_TOKEN"] = token
    log = open(c.base / f"{name}.out", "ab")  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full)
    log.close()
    c.workers[name] = proc
    return proc


def worker_log(c: LocalCluster, name: str) -> str:
    return (c.base / f"{name}.out").read_text(errors="replace")


def stop_worker(c: LocalCluster, name: str) -> None:
    proc = c.workers[name]
    proc.terminate()
    proc.wait(10)


def node_serial(c: LocalCluster, name: str) -> int:
    cert = x509.load_pem_x509_certificate((c.worker_root(name) / "tls" / "node.crt").read_bytes())
    return cert.serial_number


def maps_cryptography(pid: int) -> bool:
    """True if process ``pid`` has `cryptography`'s library mapped (it imported it)."""
    return "cryptography" in Path(f"/proc/{pid}/maps").read_text()


async def tls_connect(c: LocalCluster, ctx: ssl.SSLContext) -> Connection:
    host, port = host_port(c)
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    return Connection(reader, writer)


async def closed_without_a_word(conn: Connection) -> bool:
    """True when the master closes ``conn`` and sends nothing on it."""
    try:
        msg = await asyncio.wait_for(conn.recv(), 10)
    except (ConnectionClosed, ssl.SSLError, OSError):
        return True
    raise AssertionError(f"the master answered {msg!r}")


async def refused_at_once(c: LocalCluster, ctx: ssl.SSLContext, hello: Hello) -> None:
    """Dial with ``ctx``, say ``hello``: the master must close without sending a frame.

    (TLS 1.3 ends the client's handshake before the server has checked it, so
    the close may come while dialling, while sending, or while reading.)
    """
    try:
        conn = await tls_connect(c, ctx)
    except (ConnectionError, ssl.SSLError):
        return
    with contextlib.suppress(ConnectionClosed):
        await conn.send(hello)
    assert await closed_without_a_word(conn)
    await conn.close()


# --- enrollment -------------------------------------------------------------------------


def test_a_worker_enrolls_restarts_and_reconnects_without_the_token(
    cluster: LocalCluster,
) -> None:
    cluster.start_worker("n1")
    files = cluster.worker_root("n1") / "tls"
    assert (files / "node.key").stat().st_mode & 0o777 == 0o600
    assert (cluster.state / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert tls.NodeFiles(files).enrolled_as() == "n1"
    assert (files / "ca.crt").read_bytes() == (cluster.state / "tls" / "ca.crt").read_bytes()
    assert event_with(cluster, "n1 enrolled from")
    # The key and CSR were made in a child: the daemon itself never loads
    # `cryptography` (~10 MiB it would keep for good).
    assert not maps_cryptography(cluster.workers["n1"].pid)
    serial = node_serial(cluster, "n1")
    stop_worker(cluster, "n1")
    cluster.wait_node("n1", "left")

    start_worker(cluster, "n1", token=None)  # no token anywhere: the certificate does it
    cluster.wait_node("n1", "alive")
    assert node_serial(cluster, "n1") == serial  # not enrolled again
    assert worker_log(cluster, "n1").count("enrolled with") == 1
    # `corral nodes` shows how long the certificate has left: 90 days, less a moment.
    res = corral(cluster, "nodes")
    assert res.returncode == 0, res.stderr
    header, row = res.stdout.splitlines()[:2]
    assert header.split()[-1] == "CERT" and row.split()[-1].startswith("89d")


def test_without_certificate_or_token_the_worker_exits_with_one_line(
    cluster: LocalCluster,
) -> None:
    proc = start_worker(cluster, "n9", token=None)
    assert proc.wait(15) == 2
    assert worker_log(cluster, "n9").strip() == (
        "corral-worker: no cluster token: pass --token-file or set CORRAL_TOKEN"
    )


def test_a_wrong_token_is_refused_at_enrollment_and_counted(cluster: LocalCluster) -> None:
    start_worker(cluster, "rogue", token="not-the-token")
    found = wait_until(
        lambda: event_with(cluster, "wrong cluster token (1 since start)"), 15, "the refusal"
    )
    assert found["kind"] == "node.refused"
    wait_until(lambda: "wrong cluster token" in worker_log(cluster, "rogue"), 15, "its log")
    assert "rogue" not in cluster.nodes()
    assert not (cluster.worker_root("rogue") / "tls" / "node.crt").exists()


# --- refused before any frame is read ---------------------------------------------------


async def test_plaintext_is_refused_before_a_frame_is_read(cluster: LocalCluster) -> None:
    reader, writer = await asyncio.open_connection(*host_port(cluster))
    writer.write(encode(Hello(version=PROTOCOL_VERSION, name="plain", nonce=b"n" * 32)))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no reply frame
    writer.close()
    found = wait_until(lambda: event_with(cluster, "TLS handshake failed"), 10, "the refusal")
    assert "expected" not in found["message"]  # the Hello was never read as a frame
    assert "plain" not in cluster.nodes()


async def test_tls_without_a_client_certificate_is_refused_before_a_frame(
    cluster: LocalCluster,
) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a client with no certificate, no enroll ALPN
    await refused_at_once(cluster, ctx, Hello(version=PROTOCOL_VERSION, name="certless", nonce=b""))
    found = wait_until(
        lambda: event_with(cluster, "TLS without a client certificate"), 10, "the refusal"
    )
    assert "expected" not in found["message"]
    assert "certless" not in cluster.nodes()


async def test_a_certificate_from_another_ca_is_refused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    other = CA(tmp_path / "other-ca").open()
    key = keys.new_key()
    files = tls.NodeFiles(tmp_path / "forged")
    files.dir.mkdir()
    tls.write_private(files.key, keys.key_pem(key))
    files.store(other.sign_node("n1", keys.csr_der(key, "n1")))
    files.ca.write_bytes((cluster.state / "tls" / "ca.crt").read_bytes())  # trusts the master
    await refused_at_once(
        cluster, files.context(), Hello(version=PROTOCOL_VERSION, name="n1", nonce=b"")
    )
    found = wait_until(lambda: event_with(cluster, "TLS handshake failed"), 10, "the refusal")
    assert "CERTIFICATE_VERIFY_FAILED" in found["message"] or "ca" in found["message"].lower()
    assert "n1" not in cluster.nodes()


async def test_node1s_certificate_cannot_claim_to_be_node2(cluster: LocalCluster) -> None:
    cluster.start_worker("n1")
    stop_worker(cluster, "n1")
    cluster.wait_node("n1", "left")
    stolen = tls.NodeFiles(cluster.worker_root("n1") / "tls")
    conn = await tls_connect(cluster, stolen.context())
    with pytest.raises(AuthError, match="certificate is for node 'n1', not 'n2'"):
        await handshake.connect_channel(conn, "n2")
    await conn.close()
    assert "n2" not in cluster.nodes()
    assert cluster.nodes()["n1"]["state"] == "left"


async def test_a_certified_peer_leaves_the_unauthenticated_count_before_its_hello(
    cluster: LocalCluster,
) -> None:
    # Past its TLS handshake, a node whose certificate is on record no longer
    # holds one of the few places its address has among handshakes under way.
    cluster.start_worker("n1")
    stop_worker(cluster, "n1")
    cluster.wait_node("n1", "left")
    ctx = tls.NodeFiles(cluster.worker_root("n1") / "tls").context()
    held = [await tls_connect(cluster, ctx) for _ in range(MAX_UNAUTHENTICATED_PER_HOST + 2)]
    try:
        last = held[-1]  # not refused at the gate: the master says welcome
        welcome = await handshake.connect_channel(last, "n1")
        assert welcome.heartbeat == H
    finally:
        for conn in held:
            conn.abort()


# --- revocation and the token -------------------------------------------------------------


def test_a_revoked_node_is_cut_off_and_cannot_reconnect(cluster: LocalCluster) -> None:
    cluster.start_worker("n1")
    cluster.start_worker("n2")
    res = corral(cluster, "node", "revoke", "n1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "n1: disconnected; 1 certificate revoked"
    cluster.wait_node("n1", "lost", timeout=H)  # cut off at once: within one beat
    # It dials again with its certificate, and is refused each time.
    wait_until(lambda: "is revoked" in worker_log(cluster, "n1"), 15, "the worker's refusal")
    assert event_with(cluster, "is revoked")
    assert cluster.nodes()["n1"]["state"] == "lost"
    assert cluster.nodes()["n1"]["cert_expires"] is None
    assert cluster.nodes()["n2"]["state"] == "alive"
    again = corral(cluster, "node", "revoke", "n1")
    assert again.returncode == 1
    assert again.stderr.strip() == "corral: unknown node: n1 (no certificate on record)"

    # Only the token lets it back in: a fresh enrollment, a new certificate.
    stop_worker(cluster, "n1")
    old = node_serial(cluster, "n1")
    (cluster.worker_root("n1") / "tls" / "node.crt").unlink()
    start_worker(cluster, "n1", token=cluster.token)
    cluster.wait_node("n1", "alive")
    assert node_serial(cluster, "n1") != old


def test_token_rotation_leaves_enrolled_nodes_alone(cluster: LocalCluster) -> None:
    cluster.start_worker("n1")
    old = cluster.token
    res = corral(cluster, "token", "rotate")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"new enrollment token in {cluster.state / 'token'}"
    new = (cluster.state / "token").read_text().strip()
    assert new != old and (cluster.state / "token").stat().st_mode & 0o777 == 0o600
    cluster.token = new  # the API's bearer token too
    assert event_with(cluster, "enrollment token was replaced")

    start_worker(cluster, "late", token=old)  # the old token enrolls nobody
    wait_until(lambda: event_with(cluster, "wrong cluster token"), 15, "the refusal")
    assert "late" not in cluster.nodes()
    stop_worker(cluster, "late")
    assert cluster.nodes()["n1"]["state"] == "alive"  # its connection was not touched

    stop_worker(cluster, "n1")  # and it comes back without any token
    start_worker(cluster, "n1", token=None)
    cluster.wait_node("n1", "alive")
    start_worker(cluster, "n3", token=new)
    cluster.wait_node("n3", "alive")


# --- renewal ----------------------------------------------------------------------------------


def test_a_certificate_renews_over_the_channel_with_no_restart(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    clock = tmp_path / "clock"
    proc = start_worker(cluster, "n1", token=cluster.token, CORRAL_TEST_CLOCK=str(clock))
    cluster.wait_node("n1", "alive")
    serial = node_serial(cluster, "n1")
    key = (cluster.worker_root("n1") / "tls" / "node.key").read_bytes()
    before = cluster.nodes()["n1"]
    clock.write_text(str(SIXTY_ONE_DAYS))  # two thirds of 90 days have passed, to the worker
    wait_until(lambda: event_with(cluster, "n1: certificate renewed"), 15, "the renewal")
    wait_until(lambda: node_serial(cluster, "n1") != serial, 10, "the new certificate on disk")
    after = cluster.nodes()["n1"]
    assert after["state"] == "alive" and proc.poll() is None
    assert after["address"] == before["address"]  # the same connection: no reconnect
    assert after["cert_expires"] >= before["cert_expires"]  # (whole seconds: maybe equal)
    record = json.loads((cluster.state / "tls" / "nodes.json").read_text())
    issued = [serial for serial, _ in record["nodes"]["n1"]["certs"]]
    assert issued == [serial, node_serial(cluster, "n1")]  # the master has both on record
    log = worker_log(cluster, "n1")
    assert "certificate renewed" in log and log.count("connected to") == 1
    assert (cluster.worker_root("n1") / "tls" / "node.key").read_bytes() != key  # a new key
    assert not maps_cryptography(proc.pid)
    # The new certificate is the one it connects with from now on.
    stop_worker(cluster, "n1")
    start_worker(cluster, "n1", token=None)
    cluster.wait_node("n1", "alive")


# --- the CA's certificates ----------------------------------------------------------------


def test_node_certificates_are_backdated_for_clock_skew(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    ca = CA(tmp_path / "ca", clock=lambda: now).open()
    key = keys.new_key()
    cert = x509.load_der_x509_certificate(ca.sign_node("n1", keys.csr_der(key, "n1")))
    assert cert.not_valid_before_utc.timestamp() == now - 300
    assert cert.not_valid_after_utc.timestamp() == now + 90 * 86400
    info = tls.cert_info(cert.public_bytes(serialization.Encoding.DER))
    assert (info.name, info.not_before, info.not_after) == ("n1", now - 300, now + 90 * 86400)
    assert info.renew_at == pytest.approx(now - 300 + (90 * 86400 + 300) * 2 / 3)
    assert ca.expires("n1") == now + 90 * 86400
    with pytest.raises(ValueError, match="malformed CSR"):
        ca.sign_node("n2", b"not a csr")


def test_the_serving_certificate_names_the_addresses_workers_dial(cluster: LocalCluster) -> None:
    pem = (cluster.state / "tls" / "server.crt").read_bytes()
    sans = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    ips = [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)]
    assert "127.0.0.1" in ips  # an IP SAN, for workers that dial the IP


# --- the HTTP API off loopback ------------------------------------------------------------


def outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    return None


ENV = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}


@contextlib.contextmanager
def headless_master(tmp_path: Path, *flags: str) -> Iterator[tuple[Path, str]]:
    """A headless master with ``flags``: its state dir, and its API's address once it serves."""
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "corral", "master", "--headless", "--state-dir", str(state)]
    out = tmp_path / "master.out"
    with open(out, "wb") as log:
        master = subprocess.Popen([*argv, *flags], stdout=log, stderr=subprocess.STDOUT, env=ENV)
    try:
        api = wait_until(lambda: (state / "api").exists() and (state / "api").read_text(), 15)
        yield state, api.strip()
    finally:
        master.terminate()
        master.wait(10)


def corral_cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "corral", *args]
    return subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=30)


def test_the_api_off_loopback_serves_tls_with_the_cluster_ca(tmp_path: Path) -> None:
    ip = outside_address()
    if ip is None:
        pytest.skip("this machine has no address but loopback")
    with headless_master(tmp_path, "--listen", "127.0.0.1:0", "--api", f"{ip}:0") as (state, api):
        assert f"control API on https://{ip}:" in (tmp_path / "master.out").read_text()
        host, port = api.rsplit(":", 1)
        # Plain HTTP gets no answer in HTTP: the port speaks TLS only.
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /v1/nodes HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not s.recv(100).startswith(b"HTTP/")
        # The CLI finds the API there and trusts the cluster's CA for it.
        res = corral_cli("nodes", "--state-dir", str(state))
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "no nodes have joined yet"
        # Without the CA's certificate the client will not talk to it.
        (state / "tls" / "ca.crt").rename(tmp_path / "ca.crt")
        res = corral_cli("nodes", "--state-dir", str(state))
        assert res.returncode == 1 and "is not here" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_an_api_on_every_address_is_reached_here_over_tls_and_advertised(tmp_path: Path) -> None:
    """``--api 0.0.0.0``: the CLI on this machine dials loopback, over TLS; other machines are
    told the address given with ``--advertise`` (in the serving certificate too)."""
    flags = ["--listen", "0.0.0.0:0", "--api", "0.0.0.0:0", "--advertise", "10.9.8.7"]
    with headless_master(tmp_path, *flags) as (state, api):
        port = int(api.rsplit(":", 1)[1])
        listen_port = int((state / "listen").read_text().strip().rsplit(":", 1)[1])
        out = (tmp_path / "master.out").read_text()
        assert f"workers connect to 10.9.8.7:{listen_port} (listening on 0.0.0.0:" in out
        res = corral_cli("masters", "--json", "--state-dir", str(state))
        assert res.returncode == 0, res.stderr
        (me,) = json.loads(res.stdout)["masters"]
        assert (me["address"], me["api"]) == (f"10.9.8.7:{listen_port}", f"10.9.8.7:{port}")
        pem = (state / "tls" / "server.crt").read_bytes()
        sans = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        ips = [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)]
        assert "10.9.8.7" in ips and "127.0.0.1" in ips


@pytest.mark.parametrize("host", ["0.0.0.0", "", "a b", "10.0.0.1/24"])
def test_a_bad_advertise_is_one_line(tmp_path: Path, host: str) -> None:
    res = corral_cli(
        "master", "--headless", "--advertise", host, "--state-dir", str(tmp_path / "s")
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"corral: --advertise: bad host {host!r}: give the address or name other machines "
        "reach this master at, e.g. 10.0.0.1"
    ]
    assert not (tmp_path / "s").exists()


def test_a_broken_ca_stops_the_master_from_starting(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "tls").mkdir(parents=True, mode=0o700)
    (state / "tls" / "ca.key").write_text("not a key")
    argv = [sys.executable, "-m", "corral", "master", "--headless", "--state-dir", str(state)]
    argv += ["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert res.stderr.strip().startswith("corral master: cannot set up the cluster CA in")
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (state / "listen").exists()


def test_the_serving_certificate_renews_in_a_long_running_master(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    ca = CA(tmp_path / "ca", clock=lambda: now[0]).open()
    ca.write_server_cert(["127.0.0.1", "localhost"])
    ca.channel_context()
    ca.api_context()
    first = ca.server_cert.read_bytes()
    assert not ca.refresh_server_cert()  # young yet
    now[0] += 61 * 86400  # two thirds of 90 days
    assert ca.refresh_server_cert()
    renewed = x509.load_pem_x509_certificate(ca.server_cert.read_bytes())
    assert ca.server_cert.read_bytes() != first
    assert renewed.not_valid_after_utc.timestamp() == now[0] + 90 * 86400
    sans = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


def test_a_node_whose_certificate_expired_enrolls_again_with_the_token(
    cluster: LocalCluster,
) -> None:
    # A node that was away for more than 90 days: its certificate ran out.
    long_ago = CA(cluster.state / "tls", clock=lambda: 1_000_000_000.0).open()
    key = keys.new_key()
    files = tls.NodeFiles(cluster.worker_root("n1") / "tls")
    files.dir.mkdir(parents=True)
    tls.write_private(files.key, keys.key_pem(key))
    files.store(long_ago.sign_node("n1", keys.csr_der(key, "n1")), long_ago.cert_der)
    old = node_serial(cluster, "n1")
    start_worker(cluster, "n1", token=cluster.token)
    cluster.wait_node("n1", "alive")
    assert node_serial(cluster, "n1") != old
    assert "enrolled with" in worker_log(cluster, "n1")
