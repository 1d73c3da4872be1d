"""sd_notify over a real unix datagram socket."""
import os
import socket

import pytest

from edge.errors import EdgeError
from edge.systemd import SystemdNotifier, socket_address, watchdog_interval_s


@pytest.fixture
def listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def test_sends_states_to_socket(listener):
    path, sock = listener
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready(status="loaded bundle")
    assert sock.recv(4096) == b"READY=1\nSTATUS=loaded bundle"
    notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.status("two\nlines")
    assert sock.recv(4096) == b"STATUS=two lines"


def test_abstract_namespace():
    name = "reefwatch-test-{}".format(os.getpid())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_noop_without_notify_socket():
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.watchdog() is False


def test_missing_socket_raises_with_address(tmp_path):
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with pytest.raises(EdgeError, match="gone.sock"):
        notifier.ready()


@pytest.mark.parametrize("value, expected", [("/run/systemd/notify", "/run/systemd/notify"), ("@abc", "\0abc")])
def test_socket_address(value, expected):
    assert socket_address(value) == expected


def test_socket_address_rejects_relative():
    with pytest.raises(EdgeError, match="NOTIFY_SOCKET"):
        socket_address("relative.sock")


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "120000000"}, 60.0),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}, 5.0),
    ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
    ({"WATCHDOG_USEC": "0"}, None),
])
def test_watchdog_interval(env, expected):
    assert watchdog_interval_s(env) == expected
