"""The one place that creates the gateway's components and connects them.

Components receive only their own config section and their queues (architecture
invariant 8). ``Gateway.run`` is the whole service: one TaskGroup, named tasks,
cancelled as one on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

from gateway.config import GatewayConfig
from gateway.ingest import IngestQueue
from gateway.metrics import Metrics, serve_metrics
from gateway.store.journal import Journal
from gateway.store.writer import JournalWriter

_LOGGER = logging.getLogger(__name__)


class Source(Protocol):
    ready: asyncio.Event

    @property
    def name(self) -> str: ...

    async def run(self) -> None: ...


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.queue = IngestQueue(config.queue.max_messages, config.queue.overflow)
        self.journal = Journal(
            config.journal_path,
            synchronous=config.journal.synchronous,
            skew_limit_ms=config.skew_limit_ms,
        )
        self.writer = JournalWriter(self.journal, self.queue, config.journal, self.metrics)
        self.sources: list[Source] = self._make_sources()
        self.metrics_ready = asyncio.Event()
        self.metrics.gauges["queue_depth"] = lambda: float(self.queue.qsize())
        self.metrics.gauges["queue_dropped"] = lambda: float(sum(self.queue.dropped.values()))
        self.metrics.gauges["journal_bytes"] = self._journal_bytes

    def _journal_bytes(self) -> float:
        try:
            return float(self.config.journal_path.stat().st_size)
        except OSError:
            return 0.0

    def _make_sources(self) -> list[Source]:
        cfg = self.config
        allowed = frozenset(cfg.allowed_nodes)
        sources: list[Source] = []
        if cfg.mqtt.enabled:
            from gateway.sources.mqtt import MqttSource

            sources.append(MqttSource(cfg.mqtt, cfg.site, self.queue, self.metrics, allowed))
        if cfg.serial.ports:
            from gateway.sources.serial import SerialSource

            sources.extend(
                SerialSource(port, cfg.serial, self.queue, self.metrics, allowed)
                for port in cfg.serial.ports
            )
        if cfg.ble.enabled:
            from gateway.sources.ble import BleSource

            sources.append(BleSource(cfg.ble, self.queue, self.metrics, allowed))
        return sources

    def healthy(self) -> bool:
        """All sources connected and the journal open."""
        return self.writer.ready.is_set() and all(s.ready.is_set() for s in self.sources)

    async def wait_ready(self) -> None:
        await self.writer.ready.wait()
        for source in self.sources:
            await source.ready.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.writer.run(), name="journal:writer")
            tg.create_task(
                self.writer.run_retention(self.config.journal.raw_budget_bytes),
                name="journal:retention",
            )
            if self.config.metrics.enabled:
                m = self.config.metrics
                tg.create_task(
                    serve_metrics(self.metrics, m.host, m.port, self.metrics_ready),
                    name="metrics:http",
                )
            await self.writer.ready.wait()
            for source in self.sources:
                tg.create_task(source.run(), name=source.name)


async def run_until_signalled(gateway: Gateway) -> None:
    """Run until SIGTERM/SIGINT; then cancel everything and let components drain."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    try:
        await gateway.run()
    except asyncio.CancelledError:
        _LOGGER.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
