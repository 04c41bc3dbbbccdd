"""A loopback TCP proxy that can reset or stall connections, for fault-injection tests.

It listens on 127.0.0.1 and forwards every connection to an upstream ``host:port`` (also
loopback). A ``FaultPlan`` decides, per accepted connection, whether to pass it through,
reset it (RST via SO_LINGER 0) after the client sent ``after_bytes`` bytes, or stall it
(stop forwarding) for ``stall_s`` seconds and then reset it. Everything is bounded: the
proxy thread joins within a second of ``close()``, stalls never outlast ``stall_s`` and the
plan only injects ``max_faults`` faults. Use as a context manager::

    with FaultProxy(upstream_port, FaultPlan(mode="reset", every=2, max_faults=3)) as proxy:
        url = proxy.url          # http://127.0.0.1:PORT

With ``meter=True`` it also reads the HTTP/1.1 traffic it forwards and records every exchange
(method, path, Range header, status, body bytes) in ``proxy.exchanges``; ``proxy.traffic()`` sums
them (what a cloud bill counts: requests and bytes received)::

    with FaultProxy(s3.port, meter=True) as proxy:
        ...                      # a reader pointed at proxy.url
        proxy.traffic()          # {"GET": 12, "HEAD": 0, ..., "body_bytes": 1234567, ...}
"""
from __future__ import annotations

import random
import select
import socket
import struct
import threading
import time
from collections import deque
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


@dataclass(frozen=True)
class Exchange:
    """One HTTP request and its response, as the proxy saw them."""

    method: str
    path: str
    range: str | None        # the request's Range header
    status: int
    body_bytes: int          # response body (Content-Length or chunked payload; 0 for HEAD, 204, 304)


def _head(buf: bytearray) -> tuple[str, dict[str, str]] | None:
    """Take one HTTP head (start line, lower-cased headers) off the front of ``buf``; None if incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


class _HttpMeter:
    """Follows the two byte streams of one proxied HTTP/1.1 connection and reports each finished
    exchange to ``record``. Bodies are framed by Content-Length or chunked encoding; a response with
    neither runs to the end of the connection (``close``)."""

    def __init__(self, record) -> None:
        self.record = record
        self.up, self.down = bytearray(), bytearray()
        self.up_skip = 0                        # request body bytes still to pass
        self.pending: deque = deque()           # (method, path, range) awaiting a response
        self.current: list | None = None        # [method, path, range, status, body bytes]
        self.left = 0                           # body bytes of the current response still to come
        self.mode = ""                          # "length", "chunk-size", "skip", "trailer", "close"

    def request(self, data: bytes) -> None:
        self.up += data
        while True:
            if self.up_skip:
                take = min(self.up_skip, len(self.up))
                del self.up[:take]
                self.up_skip -= take
                if self.up_skip:
                    return
            head = _head(self.up)
            if head is None:
                return
            line, headers = head
            method, _, rest = line.partition(" ")
            self.pending.append((method, rest.rsplit(" ", 1)[0], headers.get("range")))
            self.up_skip = int(headers.get("content-length") or 0)

    def response(self, data: bytes) -> None:
        self.down += data
        while self.down:
            if self.current is None:
                if not self._start():
                    return
            elif not self._body():
                return

    def _start(self) -> bool:
        head = _head(self.down)
        if head is None:
            return False
        line, headers = head
        status = int(line.split(" ", 2)[1])
        if 100 <= status < 200:
            return True                         # 100 Continue: the real response follows
        method, path, rng = self.pending.popleft() if self.pending else ("?", "?", None)
        self.current = [method, path, rng, status, 0]
        if method == "HEAD" or status in (204, 304):
            self._finish()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.mode = "chunk-size"
        elif "content-length" in headers:
            self.mode, self.left = "length", int(headers["content-length"])
            if not self.left:
                self._finish()
        else:
            self.mode = "close"
        return True

    def _body(self) -> bool:
        """Consume body bytes of the current response; False when more data is needed."""
        if self.mode == "close":
            self.current[4] += len(self.down)
            self.down.clear()
            return False
        if self.mode in ("length", "skip"):                 # skip: a chunk's data and CRLF, counted already
            take = min(self.left, len(self.down))
            del self.down[:take]
            self.left -= take
            if self.mode == "length":
                self.current[4] += take
            if self.left:
                return False
            if self.mode == "length":
                self._finish()
            else:
                self.mode = "chunk-size"
            return True
        end = self.down.find(b"\r\n")
        if end < 0:
            return False
        line = bytes(self.down[:end]).split(b";")[0].strip()
        del self.down[:end + 2]
        if self.mode == "trailer":
            if not line:
                self._finish()
            return True
        size = int(line or b"0", 16)
        if size == 0:
            self.mode = "trailer"
        else:
            self.current[4] += size
            self.mode, self.left = "skip", size + 2
        return True

    def _finish(self) -> None:
        self.record(Exchange(*self.current))
        self.current, self.mode, self.left = None, "", 0

    def close(self) -> None:
        """The connection ended: a response framed by the connection's end is complete."""
        if self.current is not None and self.mode == "close":
            self._finish()


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
                 idle_timeout: float = 30.0, port: int = 0, meter: bool = False) -> None:
        if upstream_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"FaultProxy upstream {upstream_host!r}: loopback only")
        self.upstream = (upstream_host, upstream_port)
        self.plan = plan or FaultPlan()
        self.idle_timeout = idle_timeout
        self.connections = 0
        self.log: list[tuple[int, str]] = []          # (connection index, action)
        self.meter = meter
        self.exchanges: list[Exchange] = []           # with ``meter``: every HTTP exchange forwarded
        self.bytes_down = 0                           # with ``meter``: bytes from upstream, headers included
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

    def traffic(self) -> dict[str, int]:
        """Requests per method, response body bytes (``body_bytes``, all methods; ``get_bytes``, GETs)
        and ``wire_bytes`` (everything the upstream sent, HTTP heads included), since the last ``reset_traffic``."""
        with self._lock:
            exchanges, wire = list(self.exchanges), self.bytes_down
        out: dict[str, int] = {"requests": len(exchanges), "GET": 0, "HEAD": 0, "body_bytes": 0, "get_bytes": 0,
                               "errors": sum(1 for e in exchanges if e.status >= 400), "wire_bytes": wire}
        for e in exchanges:
            out[e.method] = out.get(e.method, 0) + 1
            out["body_bytes"] += e.body_bytes
            out["get_bytes"] += e.body_bytes if e.method == "GET" else 0
        return out

    def reset_traffic(self) -> None:
        """Forget the exchanges counted so far."""
        with self._lock:
            self.exchanges.clear()
            self.bytes_down = 0

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

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
        meter = _HttpMeter(self._record) if self.meter else None
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
                        if meter is not None:
                            meter.request(data)
                        upstream.sendall(data)
                    else:
                        if meter is not None:
                            meter.response(data)
                            with self._lock:
                                self.bytes_down += len(data)
                        client.sendall(data)
        except OSError:
            pass
        finally:
            if meter is not None:
                meter.close()
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
