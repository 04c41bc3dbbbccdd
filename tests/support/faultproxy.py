"""A loopback TCP proxy that can reset or stall connections, for fault-injection tests.

It listens on 127.0.0.1 and forwards every connection to an upstream ``host:port`` (also
loopback). A ``FaultPlan`` decides, per accepted connection, whether to pass it through,
reset it (RST via SO_LINGER 0) after the client sent ``after_bytes`` bytes, or stall it
(stop forwarding) for ``stall_s`` seconds and then reset it. Everything is bounded: the
proxy thread joins within a second of ``close()``, stalls never outlast ``stall_s`` and the
plan only injects ``max_faults`` faults. Use as a context manager::

    with FaultProxy(upstream_port, FaultPlan(mode="reset", every=2, max_faults=3)) as proxy:
        url = proxy.url          # http://127.0.0.1:PORT
"""
from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

MODES = ("pass", "reset", "stall")


@dataclass
class FaultPlan:
    """Which connections to break and how.

    ``mode``: "pass", "reset" or "stall". A connection is faulted when its index (0-based,
    in accept order) is >= ``start`` and ``(index - start) % every == 0``, or, when
    ``probability`` is set, with that seeded probability; at most ``max_faults`` times.
    """

    mode: str = "pass"
    every: int = 1
    start: int = 0
    probability: float | None = None
    seed: int = 0
    max_faults: int = 1
    after_bytes: int = 0        # client bytes forwarded before the fault strikes
    stall_s: float = 2.0        # how long a stalled connection hangs before it is reset
    faults: int = 0
    _rng: random.Random = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"FaultPlan mode {self.mode!r}: expected one of {MODES}")
        self._rng = random.Random(self.seed)

    def decide(self, index: int) -> str:
        """The fault for connection ``index`` ("pass", "reset" or "stall")."""
        if self.mode == "pass" or self.faults >= self.max_faults or index < self.start:
            return "pass"
        if self.probability is not None:
            hit = self._rng.random() < self.probability
        else:
            hit = (index - self.start) % max(1, self.every) == 0
        if not hit:
            return "pass"
        self.faults += 1
        return self.mode


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """A threaded TCP proxy on 127.0.0.1 (``port``, or any free one) in front of ``upstream_port``."""

    def __init__(self, upstream_port: int, plan: FaultPlan | None = None, upstream_host: str = "127.0.0.1",
                 idle_timeout: float = 30.0, port: int = 0) -> None:
        if upstream_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"FaultProxy upstream {upstream_host!r}: loopback only")
        self.upstream = (upstream_host, upstream_port)
        self.plan = plan or FaultPlan()
        self.idle_timeout = idle_timeout
        self.connections = 0
        self.log: list[tuple[int, str]] = []          # (connection index, action)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faults(self) -> int:
        return sum(1 for _, action in self.log if action != "pass")

    def __enter__(self) -> "FaultProxy":
        self._accepter.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, end every connection; returns within about a second."""
        self._stop.set()
        self._accepter.join(timeout=2)
        self._server.close()
        for t in list(self._threads):
            t.join(timeout=1)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                index = self.connections
                self.connections += 1
                action = self.plan.decide(index)
                self.log.append((index, action))
            t = threading.Thread(target=self._serve, args=(client, action), daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _serve(self, client: socket.socket, action: str) -> None:
        if action != "pass" and self.plan.after_bytes <= 0:
            if action == "stall":
                self._stall(client, None)
            else:
                _reset(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)          # upstream down: the client sees a reset, like a dead server
            return
        sent = 0
        deadline = time.monotonic() + self.idle_timeout
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    deadline = time.monotonic() + self.idle_timeout
                    if sock is client:
                        if action != "pass" and sent + len(data) >= self.plan.after_bytes:
                            cut = max(0, self.plan.after_bytes - sent)
                            upstream.sendall(data[:cut])
                            if action == "stall":
                                self._stall(client, upstream)
                            else:
                                _reset(client)
                                _reset(upstream)
                            return
                        sent += len(data)
                        upstream.sendall(data)
                    else:
                        client.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                try:
                    sock.close()
                except OSError:
                    pass

    def _stall(self, client: socket.socket, upstream: socket.socket | None) -> None:
        """Hold the connection open without forwarding, then reset it (bounded by ``stall_s``)."""
        end = time.monotonic() + self.plan.stall_s
        while not self._stop.is_set() and time.monotonic() < end:
            time.sleep(0.05)
        _reset(client)
        if upstream is not None:
            _reset(upstream)
