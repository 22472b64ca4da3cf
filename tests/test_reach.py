"""How the runner reaches the machines of an engine (harness.hosts.reach): decided by checking."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.hosts.reach import (
    BRIDGE,
    PUBLISHED,
    TUNNEL,
    EngineConnection,
    Route,
    Unreachable,
    decide,
    gateway_reaches_here,
    host_override,
    publishes,
)
from harness.waiting import wait_until

LOCAL, REMOTE = (lambda: True), (lambda: False)


def test_a_bridge_this_machine_is_on_is_reached_directly_whatever_the_engine_address():
    for engine in ("unix:///var/run/docker.sock", "ssh://runner@127.0.0.1:2222", "tcp://127.0.0.1:2375"):
        assert decide(engine, None, LOCAL) == Route(BRIDGE)


def test_an_ssh_engine_whose_bridge_is_elsewhere_is_reached_through_a_tunnel_to_its_host():
    assert decide("ssh://runner@127.0.0.1:2222", None, REMOTE) == Route(TUNNEL, "127.0.0.1", "runner", 2222)
    assert decide("ssh://engine.example", None, REMOTE) == Route(TUNNEL, "engine.example", None, None)


def test_a_tcp_engine_whose_bridge_is_elsewhere_is_reached_on_the_ports_it_publishes():
    assert decide("tcp://docker:2376", None, REMOTE) == Route(PUBLISHED, "docker")
    assert publishes("tcp://docker:2376", None) and not publishes("ssh://runner@h", None)
    assert not publishes("unix:///var/run/docker.sock", None)


def test_the_testcontainers_override_names_the_host_of_the_published_ports_without_a_check():
    def not_asked() -> bool:
        raise AssertionError("no check with an override")

    assert decide("ssh://runner@h", "gw.example", not_asked) == Route(PUBLISHED, "gw.example")
    assert publishes("unix:///var/run/docker.sock", "localhost")


def test_the_override_is_read_as_testcontainers_reads_it():
    assert host_override({"TESTCONTAINERS_HOST_OVERRIDE": "a"}) == "a"
    assert host_override({"TC_HOST": "b", "TESTCONTAINERS_HOST_OVERRIDE": "a"}) == "b"
    assert host_override({"TESTCONTAINERS_HOST_OVERRIDE": ""}) is None


def test_a_local_socket_whose_bridge_is_elsewhere_says_how_to_reach_it():
    with pytest.raises(Unreachable, match=r"unix:///x\.sock are not reachable.*TESTCONTAINERS_HOST_OVERRIDE"):
        decide("unix:///x.sock", None, REMOTE)


def _sender(received: list[str], token_override: str | None = None):
    """A machine on the network: connects to the runner's listener and sends the token."""

    def send(address: str, port: int, token: str) -> None:
        def run() -> None:
            with socket.create_connection((address, port), timeout=2) as connection:
                connection.sendall(f"{token_override or token}\n".encode())
                received.append(token)

        threading.Thread(target=run).start()

    return send


def test_the_gateway_is_here_when_a_machine_sending_to_it_reaches_this_process():
    assert gateway_reaches_here("127.0.0.1", _sender([]), timeout=5)


def test_a_gateway_that_answers_with_another_token_is_another_engine_with_the_same_subnet():
    assert not gateway_reaches_here("127.0.0.1", _sender([], token_override="someone-else"), timeout=5)


def test_a_gateway_no_interface_here_has_is_not_here_and_nothing_is_sent():
    sent: list[str] = []
    assert not gateway_reaches_here("192.0.2.1", lambda *args: sent.append("sent"), timeout=1)  # TEST-NET-1
    assert sent == []


def test_a_machine_that_sends_nothing_is_not_waited_for_past_the_deadline():
    assert not gateway_reaches_here("127.0.0.1", lambda *args: None, timeout=0.5)


FAKE_SSH = r"""#!/bin/sh
# A stand-in for OpenSSH: records its argv; a master (-M) makes its control socket (-S) and stays
echo "$*" >> "$FAKE_SSH_LOG"
control=
while [ $# -gt 0 ]; do
    case $1 in
        -S) control=$2; shift ;;
        -M) master=yes ;;
    esac
    shift
done
if [ -n "$master" ]; then
    echo $$ > "$FAKE_SSH_LOG.master"
    : > "$control"
    exec sleep 300
fi
printf '%s\n' "$FAKE_REMOTE_DOCKER_HOST"
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """`ssh` on PATH is FAKE_SSH; returns its argv log."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ssh").write_text(FAKE_SSH)
    (tmp_path / "bin" / "ssh").chmod(0o755)
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("FAKE_REMOTE_DOCKER_HOST", "")
    return log


def test_the_engine_socket_is_forwarded_from_where_the_engine_host_says(fake_ssh, monkeypatch):
    connection = EngineConnection("ssh://runner@engine.example:2222")
    try:
        url = connection.socket_url()
        assert url.startswith("unix://") and url.endswith("/docker.sock")
        local = url.removeprefix("unix://")
        assert f"-O forward -L {local}:/var/run/docker.sock" in fake_ssh.read_text()
        assert "-l runner -p 2222" in fake_ssh.read_text()
    finally:
        connection.close()
    monkeypatch.setenv("FAKE_REMOTE_DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    connection = EngineConnection("ssh://engine.example")
    try:
        assert f"{connection.socket_url().removeprefix('unix://')}:/run/user/1000/docker.sock" in fake_ssh.read_text()
    finally:
        connection.close()


def test_an_engine_host_whose_docker_host_is_no_socket_is_refused_with_the_way_out(fake_ssh, monkeypatch):
    monkeypatch.setenv("FAKE_REMOTE_DOCKER_HOST", "tcp://10.0.0.5:2375")
    connection = EngineConnection("ssh://engine.example")
    try:
        with pytest.raises(Unreachable, match=r"DOCKER_HOST=tcp://10\.0\.0\.5:2375.*point DOCKER_HOST here"):
            connection.socket_url()
    finally:
        connection.close()


def test_the_connection_ends_with_the_process_that_opened_it_even_when_killed(fake_ssh):
    """A killed pytest worker leaves no ssh behind (its forwards would stay open)."""
    opener = subprocess.Popen(
        [sys.executable, "-c", "from harness.hosts.reach import EngineConnection as E; "
         "E('ssh://engine.example').forward('172.18.0.2', 5432); print('up', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert opener.stdout is not None and opener.stdout.readline().strip() == "up"
        master = int(Path(f"{fake_ssh}.master").read_text())
        assert _alive(master)
        opener.kill()
        opener.wait()
        wait_until(lambda: not _alive(master), timeout=10, what=f"the master ssh {master} to end")
    finally:
        opener.kill()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
