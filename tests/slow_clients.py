"""Slow HTTP clients and a /ping probe, standard library only (``test_front_server.py`` and
``test_image.py`` import it).

:class:`SlowClients` opens connections that trickle a request one byte a second, either its header
(the request never ends) or, after a complete header announcing a large body, its body: each such
connection holds whatever server thread reads it. :func:`ping_latencies` times ``GET /ping`` on a fresh
connection meanwhile. As a script::

    python3 tests/slow_clients.py http://127.0.0.1:8080 --headers 50 --bodies 50 --seconds 10

prints the latencies and exits 1 when a ping took 2 s or more (or failed), or when the server dropped a
slow connection before the end (the check would then prove nothing).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from urllib.parse import urlsplit

# A header that never ends: one more header line byte by byte, never the blank line.
HEADER_START = b"POST /invocations HTTP/1.1\r\nHost: slow\r\nContent-Type: application/zip\r\nX-Slow: "
# A complete header announcing a body that then comes one byte a second.
BODY_START = b"POST /invocations HTTP/1.1\r\nHost: slow\r\nContent-Type: application/zip\r\nContent-Length: 100000\r\n\r\n"
PING_LIMIT = 2.0


class SlowClients:
    """``headers`` connections trickling a header and ``bodies`` trickling a body, one byte per
    ``interval`` each, until :meth:`close` (use as a context manager)."""

    def __init__(
        self, host: str, port: int, *, headers: int = 0, bodies: int = 0, interval: float = 1.0
    ) -> None:
        self.host, self.port, self.interval = host, port, interval
        self.sockets: list[socket.socket] = []
        self.dropped = 0  # connections the server closed or reset while we were still sending
        self.rounds = 0  # times every live connection has been sent one more byte
        self._round_done = threading.Condition()
        self._stop = threading.Event()
        for start, count in ((HEADER_START, headers), (BODY_START, bodies)):
            for _ in range(count):
                sock = socket.create_connection((host, port), timeout=5)
                sock.sendall(start)
                self.sockets.append(sock)
        self._thread = threading.Thread(target=self._trickle, daemon=True, name="slow-clients")
        self._thread.start()

    def _trickle(self) -> None:
        live = list(self.sockets)
        while not self._stop.wait(self.interval):
            for sock in list(live):
                try:
                    sock.sendall(b"a")
                except OSError:
                    live.remove(sock)
                    self.dropped += 1
            with self._round_done:
                self.rounds += 1
                self._round_done.notify_all()

    def wait_rounds(self, rounds: int = 1, timeout: float = 30.0) -> bool:
        """Wait until every live connection has trickled ``rounds`` bytes after its opening part, so each
        has been sending for a while before the check starts; False if ``timeout`` seconds pass first."""
        with self._round_done:
            return self._round_done.wait_for(lambda: self.rounds >= rounds, timeout)

    def still_open(self) -> int:
        """Connections the server has neither closed nor answered (a read would block)."""
        count = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    continue  # closed by the server
            except BlockingIOError:
                count += 1  # nothing to read: still waiting on us
            except OSError:
                continue
            finally:
                sock.setblocking(True)
        return count

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()

    def __enter__(self) -> SlowClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ping_once(host: str, port: int, timeout: float = 5.0) -> float:
    """Seconds for one ``GET /ping`` answered 200 on a fresh connection; ``inf`` on failure or timeout."""
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError:
        return float("inf")
    if not answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")):
        return float("inf")
    return time.monotonic() - started


def ping_latencies(host: str, port: int, seconds: float, every: float = 0.2) -> list[float]:
    """Ping for ``seconds``, one every ``every`` seconds; each latency in seconds (``inf`` for a failure)."""
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        latencies.append(ping_once(host, port))
        time.sleep(every)
    return latencies


def describe(latencies: list[float]) -> str:
    failed = sum(1 for value in latencies if value == float("inf"))
    finite = [value for value in latencies if value != float("inf")] or [float("inf")]
    return (
        f"n={len(latencies)} median={statistics.median(latencies) * 1000:.1f} ms "
        f"max={max(finite) * 1000:.1f} ms (of answered) failed/timed out={failed}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--headers", type=int, default=50, help="connections trickling a header")
    parser.add_argument("--bodies", type=int, default=50, help="connections trickling a body")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to ping meanwhile")
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with SlowClients(host, port, headers=args.headers, bodies=args.bodies) as slow:
        if not slow.wait_rounds(1):  # every slow connection accepted and read from at least once
            print("FAIL: the slow connections could not send their first byte")
            return 1
        latencies = ping_latencies(host, port, args.seconds)
        open_at_end = slow.still_open()
    total = args.headers + args.bodies
    print(
        f"/ping with {total} slow connections ({args.headers} headers, {args.bodies} bodies): {describe(latencies)}"
    )
    print(
        f"slow connections still open at the end: {open_at_end} of {total} (dropped while sending: {slow.dropped})"
    )
    if open_at_end < total:
        print("FAIL: the server dropped slow connections during the check, so it proves nothing")
        return 1
    if max(latencies) >= PING_LIMIT:
        print(f"FAIL: a /ping took {PING_LIMIT:g} s or more, or failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
