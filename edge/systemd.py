"""A tiny sd_notify client: READY=1, WATCHDOG=1, STOPPING=1, STATUS=... to systemd.

Messages go as one datagram to the unix socket named by $NOTIFY_SOCKET
("@name" is the abstract namespace). Without NOTIFY_SOCKET every call is a
no-op, so the daemon runs the same outside systemd. The environment is read
when a notifier is built, never at import.
"""
import os
import socket

from edge.errors import EdgeError


def socket_address(notify_socket):
    """$NOTIFY_SOCKET -> address for socket.sendto ('@x' -> '\\0x' abstract); EdgeError if malformed."""
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]
    if notify_socket.startswith("/"):
        return notify_socket
    raise EdgeError("NOTIFY_SOCKET={!r}: expected an absolute path or an '@' abstract name".format(notify_socket))


def watchdog_interval_s(env=None):
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC, or None when no watchdog is asked for.

    Honours $WATCHDOG_PID: a watchdog meant for another process is not ours.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError as e:
        raise EdgeError("WATCHDOG_USEC={!r}: expected microseconds as an integer".format(usec)) from e
    return value / 1.0e6 / 2.0 if value > 0 else None


class SystemdNotifier(object):
    """Send sd_notify states; `enabled` is False (and sends do nothing) without NOTIFY_SOCKET."""

    def __init__(self, env=None):
        env = os.environ if env is None else env
        value = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(value) if value else None

    @property
    def enabled(self):
        return self.address is not None

    def send(self, *states):
        """Send "KEY=value" lines in one datagram; returns True when sent, False when disabled."""
        if self.address is None:
            return False
        message = "\n".join(states).encode("utf-8")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.sendto(message, self.address)
        except OSError as e:
            raise EdgeError("sd_notify {!r} to {!r} failed: {}".format(states, self.address, e)) from e
        finally:
            sock.close()
        return True

    def ready(self, status=None):
        return self.send("READY=1", *(["STATUS=" + status] if status else []))

    def watchdog(self):
        return self.send("WATCHDOG=1")

    def stopping(self):
        return self.send("STOPPING=1")

    def status(self, text):
        return self.send("STATUS=" + text.replace("\n", " "))
