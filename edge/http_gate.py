"""Connection handling for the status server: bounded threads, idle timeouts, 503 beyond a limit.

One thread accepts connections and holds each in a selector until its
request starts arriving, then queues it for a fixed pool of workers. A
connection that sends nothing within the timeout is closed there, so idle
clients cost a descriptor for a bounded time and no thread (socketserver's
ThreadingMixIn gave each one a thread for ever); beyond `max_connections`
(waiting, queued and being answered together) a new one gets a 503 at once.
"""
import logging
import queue
import selectors
import socket
import threading
import time

logger = logging.getLogger(__name__)

# A connection still being answered after this many timeouts is cut (a client trickling bytes).
REQUEST_DEADLINE_TIMEOUTS = 4
_BUSY_BODY = b'{"error": "status server busy: too many open connections"}'
BUSY_RESPONSE = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


def _refuse(sock):
    """Answer 503 from the accept thread and close. Reads what the client sent first: closing a socket with
    unread data sends a reset, which can make the client lose the answer."""
    sock.setblocking(False)
    try:
        try:
            sock.recv(65536)
        except BlockingIOError:
            pass
        sock.send(BUSY_RESPONSE)  # a fresh socket's send buffer holds it: never blocks
    except OSError as e:  # the client is gone already: nothing to answer
        logger.debug("HTTP refusal not delivered: %s", e)
    finally:
        sock.close()


def _cut(sock):
    """Shut a worker's connection down from another thread: its blocked read or write returns at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError as e:  # already disconnected: the worker is finishing anyway
        logger.debug("HTTP connection already closed: %s", e)


class ConnectionGate(object):
    """Accept loop plus worker pool for a bound, listening `socketserver.TCPServer` (see the module docstring).

    The server's `finish_request` answers one connection; `timeout_s` is the longest a connection may wait
    before its request starts, and REQUEST_DEADLINE_TIMEOUTS times that the longest it may take to be answered.
    """

    def __init__(self, server, timeout_s, max_connections, max_workers):
        self.server, self.timeout_s, self.max_connections = server, timeout_s, max_connections
        self._ready = queue.Queue()  # needs no bound of its own: max_connections bounds it
        self._lock = threading.Lock()
        self._open = 0  # connections accepted and not closed; guarded by _lock
        self._waiting = {}  # socket -> (client address, deadline): no request byte yet
        self._active = {}  # socket -> deadline: being answered by a worker; guarded by _lock
        self._refused, self._refused_logged_s = 0, None
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._threads = [threading.Thread(target=self._accept_loop, name="reefwatch-http", daemon=True)]
        self._threads += [threading.Thread(target=self._work, name="reefwatch-http-worker-%d" % i, daemon=True)
                          for i in range(max_workers)]

    def in_flight(self):
        """How many connections workers are answering now."""
        with self._lock:
            return len(self._active)

    def start(self):
        self.server.socket.setblocking(False)
        self._selector.register(self.server.socket, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        for thread in self._threads:
            thread.start()

    def stop(self):
        """Stops accepting, closes waiting and queued connections, cuts those in flight, joins every thread."""
        self._stopping = True
        self._wake_w.send(b"x")
        self._threads[0].join()  # nothing is queued after this
        for sock in list(self._waiting):
            sock.close()
        while True:
            try:
                sock, _ = self._ready.get_nowait()
            except queue.Empty:
                break
            sock.close()
        for _ in self._threads[1:]:
            self._ready.put(None)
        with self._lock:  # a worker that takes a connection after this cuts it itself (see _work)
            for sock in self._active:
                _cut(sock)
        for thread in self._threads[1:]:
            thread.join()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self.server.server_close()

    def _accept_loop(self):
        try:
            while not self._stopping:
                for key, _ in self._selector.select(self._wait_s()):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._wake_r.recv(64)
                    else:  # the request has started arriving (or the client closed): a worker takes it
                        self._selector.unregister(key.fileobj)
                        self._ready.put((key.fileobj, self._waiting.pop(key.fileobj)[0]))
                self._expire()
        except Exception:  # into the daemon's log, not only the thread's stderr; the status server is down
            logger.exception("HTTP accept loop failed; the status server stops answering")
            raise

    def _wait_s(self):
        with self._lock:
            deadlines = list(self._active.values())
        deadlines += [deadline for _, deadline in self._waiting.values()]
        return max(0.0, min(deadlines + [time.monotonic() + 1.0]) - time.monotonic())

    def _accept(self):
        try:
            sock, address = self.server.socket.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # e.g. out of descriptors: keep answering the connections already open
            logger.warning("HTTP accept failed: %s", e)
            return
        with self._lock:
            full = self._open >= self.max_connections
            self._open += 0 if full else 1
        if full:
            _refuse(sock)
            self._count_refusal()
            return
        self._waiting[sock] = (address, time.monotonic() + self.timeout_s)
        self._selector.register(sock, selectors.EVENT_READ, "client")

    def _count_refusal(self):
        """One warning a minute with the count, not one per connection."""
        self._refused += 1
        now = time.monotonic()
        if self._refused_logged_s is None or now - self._refused_logged_s >= 60.0:
            logger.warning("HTTP busy: refused %d connection(s) with 503 (max_connections=%d)",
                           self._refused, self.max_connections)
            self._refused, self._refused_logged_s = 0, now

    def _expire(self):
        now = time.monotonic()
        for sock, (_, deadline) in list(self._waiting.items()):
            if deadline <= now:  # connected and sent nothing: close, as HTTP servers do, without an answer
                self._selector.unregister(sock)
                del self._waiting[sock]
                sock.close()
                self._release()
        with self._lock:
            late = [sock for sock, deadline in self._active.items() if deadline <= now]
            for sock in late:
                del self._active[sock]
                _cut(sock)

    def _release(self):
        with self._lock:
            self._open -= 1

    def _work(self):
        while True:
            item = self._ready.get()
            if item is None:
                return
            sock, address = item
            with self._lock:
                self._active[sock] = time.monotonic() + REQUEST_DEADLINE_TIMEOUTS * self.timeout_s
                if self._stopping:  # taken after stop() cut the others: do not wait on this client
                    _cut(sock)
            try:
                self.server.finish_request(sock, address)
            except OSError as e:  # the client went away or was cut: its problem, not the server's
                logger.debug("HTTP connection from %s ended: %s", address, e)
            except Exception:  # any other failure must not end the worker: log it with the traceback
                logger.exception("HTTP connection from %s failed", address)
            finally:
                with self._lock:
                    self._active.pop(sock, None)
                self.server.shutdown_request(sock)
                self._release()
