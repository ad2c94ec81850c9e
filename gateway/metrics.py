"""Counters for what the gateway did, and the Prometheus endpoint that shows them.

The counters are plain attributes the gateway's components bump on the loop. A scrape takes
a snapshot of them on the loop and renders the page (prometheus_client's format, with
per-node and process figures) in a worker thread: :mod:`gateway.metrics_exposition`. The
HTTP side is a small asyncio server with bounded request handling.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.errors import TransportError
from gateway.log_limit import LimitedWarning
from gateway.metrics_exposition import NodeSource, Snapshot, render

if TYPE_CHECKING:
    from gateway.store.journal import CommitResult

_LOGGER = logging.getLogger(__name__)
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


OTHER_NODES = "_other"


class BoundedCounter(Counter[tuple[str, str]]):
    """A (transport, node id) counter with at most ``max_ids`` distinct node ids per
    transport: ids after that are counted together as ``_other``, so made-up ids cannot
    grow memory or the /metrics page without bound."""

    def __init__(self, max_ids: int = 100) -> None:
        super().__init__()
        self._max_ids = max_ids
        self._ids: Counter[str] = Counter()  # distinct ids held, per transport

    def __setitem__(self, key: tuple[str, str], value: int) -> None:
        if key not in self:
            transport = key[0]
            if self._ids[transport] >= self._max_ids:
                key = (transport, OTHER_NODES)
                value += self.get(key, 0)  # the caller added to 0: add to _other instead
                if key in self:
                    super().__setitem__(key, value)
                    return
            self._ids[transport] += 1
        super().__setitem__(key, value)


class Metrics:
    def __init__(self) -> None:
        self.readings_in: Counter[str] = Counter()  # committed messages' seqs, per transport
        self.duplicates: Counter[str] = Counter()
        self.malformed: Counter[tuple[str, str]] = Counter()  # (transport, reason)
        self.rejected_nodes = BoundedCounter()  # (transport, node_id)
        self.lost = 0
        self.seq_jumps = 0
        self._seq_jump_log = LimitedWarning(_LOGGER)
        self.evicted = 0
        self.commits = 0
        self.commit_seconds = 0.0
        self.gauges: dict[str, Callable[[], float]] = {}
        # Counters whose value a component keeps (name -> (help, read it)).
        self.counter_fns: dict[str, tuple[str, Callable[[], float]]] = {}
        # Per node: figures from the journal (read in the rendering thread) and the latest
        # scores (read on the loop with the snapshot).
        self.node_figures: NodeSource | None = None
        self.node_scores: Callable[[], dict[str, tuple[float | None, float | None]]] | None = None

    def record_commit(self, result: CommitResult) -> None:
        self.readings_in.update(result.inserted)
        self.duplicates.update(result.duplicates)
        self.lost += result.lost
        self.seq_jumps += sum(result.seq_jumps.values())
        for node_id, n in result.seq_jumps.items():
            self._seq_jump_log.warning(
                "%s: %d message(s) refused: seq jumped past journal.max_seq_jump", node_id, n
            )
        self.commits += 1
        self.commit_seconds += result.seconds

    def malformed_input(self, transport: str, reason: str) -> None:
        self.malformed[(transport, reason)] += 1

    def snapshot(self) -> Snapshot:
        """Copy what a scrape shows, on the loop (no I/O; gauges must be cheap)."""
        snap = Snapshot(
            labelled=[
                ("messages_in", "Node message seqs committed to the journal.", ("transport",),
                 {(t,): float(n) for t, n in self.readings_in.items()}),
                ("duplicates", "Message seqs received again and stored once.", ("transport",),
                 {(t,): float(n) for t, n in self.duplicates.items()}),
                ("malformed", "Input that did not decode, by kind.", ("transport", "reason"),
                 {k: float(n) for k, n in self.malformed.items()}),
                ("rejected", "Messages from node ids that are not allowed (ids capped).",
                 ("transport", "node"), {k: float(n) for k, n in self.rejected_nodes.items()}),
            ],
            counters={
                "lost": ("Message seqs that will never arrive (gaps).", float(self.lost)),
                "seq_jumps": ("Messages refused: seq far past the node's stream.",
                              float(self.seq_jumps)),
                "evicted": ("Raw readings evicted under the journal's budget.",
                            float(self.evicted)),
                "commits": ("Journal group commits.", float(self.commits)),
                "commit_seconds": ("Time spent in journal commits.", self.commit_seconds),
            },
        )  # fmt: skip
        for name, (help_text, fn) in self.counter_fns.items():
            snap.counters[name] = (help_text, float(fn()))
        snap.gauges = {name: float(fn()) for name, fn in self.gauges.items()}
        if self.node_scores is not None:
            snap.scores = self.node_scores()
        return snap

    def render(self) -> str:
        """The whole page at once (tests and tools; the server renders off the loop)."""
        return render(self.snapshot(), self.node_figures).decode()


async def serve_metrics(metrics: Metrics, host: str, port: int, ready: asyncio.Event) -> None:
    """Serve ``GET /metrics`` until cancelled."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            if path == b"/metrics":
                snap = metrics.snapshot()
                body = await asyncio.to_thread(render, snap, metrics.node_figures)
                status = b"200 OK"
            else:
                body, status = b"not found; try /metrics\n", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + CONTENT_TYPE + b"\r\n"
                b"Content-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,  # a request head over the stream limit (64 KiB)
            ValueError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(handle, host, port)
    except OSError as exc:
        raise TransportError(
            f"metrics endpoint cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(is another gateway running? set metrics.port or metrics.enabled = false)"
        ) from exc
    bound = server.sockets[0].getsockname()
    _LOGGER.info("metrics on http://%s:%d/metrics", bound[0], bound[1])
    ready.set()
    async with server:
        await server.serve_forever()
