"""Counters for what the gateway did, and a Prometheus text endpoint for them.

Kept dependency-free: a handful of counters and gauges rendered in the Prometheus
text exposition format by a tiny asyncio HTTP server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.errors import TransportError
from gateway.log_limit import LimitedWarning

if TYPE_CHECKING:
    from gateway.store.journal import CommitResult

_LOGGER = logging.getLogger(__name__)


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

    def render(self) -> str:
        lines = [
            "# HELP fieldgate_messages_in_total Node message seqs committed to the journal.",
            "# TYPE fieldgate_messages_in_total counter",
        ]
        lines += [
            f'fieldgate_messages_in_total{{transport="{t}"}} {n}'
            for t, n in sorted(self.readings_in.items())
        ]
        lines += ["# TYPE fieldgate_duplicates_total counter"]
        lines += [
            f'fieldgate_duplicates_total{{transport="{t}"}} {n}'
            for t, n in sorted(self.duplicates.items())
        ]
        lines += ["# TYPE fieldgate_malformed_total counter"]
        lines += [
            f'fieldgate_malformed_total{{transport="{t}",reason="{r}"}} {n}'
            for (t, r), n in sorted(self.malformed.items())
        ]
        lines += ["# TYPE fieldgate_rejected_total counter"]
        lines += [
            f'fieldgate_rejected_total{{transport="{t}",node="{n}"}} {c}'
            for (t, n), c in sorted(self.rejected_nodes.items())
        ]
        lines += [
            "# TYPE fieldgate_lost_total counter",
            f"fieldgate_lost_total {self.lost}",
            "# HELP fieldgate_seq_jumps_total Messages refused: seq far past the node's stream.",
            "# TYPE fieldgate_seq_jumps_total counter",
            f"fieldgate_seq_jumps_total {self.seq_jumps}",
            "# TYPE fieldgate_evicted_total counter",
            f"fieldgate_evicted_total {self.evicted}",
            "# TYPE fieldgate_commits_total counter",
            f"fieldgate_commits_total {self.commits}",
            "# TYPE fieldgate_commit_seconds_total counter",
            f"fieldgate_commit_seconds_total {self.commit_seconds:.6f}",
        ]
        for name, fn in sorted(self.gauges.items()):
            lines += [f"# TYPE fieldgate_{name} gauge", f"fieldgate_{name} {fn()}"]
        return "\n".join(lines) + "\n"


async def serve_metrics(metrics: Metrics, host: str, port: int, ready: asyncio.Event) -> None:
    """Serve ``GET /metrics`` until cancelled."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            if path == b"/metrics":
                body, status = metrics.render().encode(), b"200 OK"
            else:
                body, status = b"not found; try /metrics\n", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
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
