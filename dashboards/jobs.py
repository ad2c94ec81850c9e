"""Flash jobs from the Models page: firmware_tools' orchestration run inside the gateway.

The same code as ``flash-model flash`` and ``flash-model rollback``: nodes are reached through
:class:`~firmware_tools.flash.factory.FlasherFactory` and flashed by
:func:`~firmware_tools.flash.orchestrate.flash_fleet` (pre-flight, resumable upload with
retries, test boot, self-test verdict). This is the one dashboards module that imports
firmware_tools (``tests/unit/test_layering.py`` allows it here and nowhere else in the
dashboard), and only its flasher, never the simulator.

How the gateway reaches a node to flash it:

* a node listed in ``<data_dir>/models/fleet.toml`` (flash-model's fleet inventory format)
  is reached as listed there, with that file's ``[defaults]`` (parallel, retries, baud...);
* otherwise a node the gateway hears over MQTT is reached through the gateway's own broker
  (``[mqtt] url``, ``site``), which is how networked nodes take models (docs/protocol.md §10);
* nothing else: a serial port the gateway reads its data from cannot carry a transfer at the
  same time, and BLE needs a controller of its own; the Models page says why per node.

Jobs run on the gateway's event loop as awaits inside the task ``web:flash-jobs``
(:meth:`FlashJobs.run`, started by ``dashboards/server.py``): the transfers are network and
serial I/O, the blocking parts (reading the artifact, SQLite) go to threads, so ingest never
waits for them. One job at a time: a second start is refused with the running job's number.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from dashboards.actions import ActionError
from dashboards.job_store import Job, JobStore, NodeResult
from dashboards.models import load_for_flashing
from dashboards.users import UserStore
from firmware_tools.flash import orchestrate
from firmware_tools.flash.api import FlashResult, NodeRefused, NodeUnreachable
from firmware_tools.flash.factory import FlasherFactory, LinkOptions
from firmware_tools.flash.inventory import (
    FleetDefaults,
    Inventory,
    NodeEntry,
    Transport,
    load_inventory,
)
from gateway.config import GatewayConfig
from gateway.errors import ConfigError, FieldgateError, FlashError, ModelError
from gateway.protocol.signed_manifest import SignedManifest

_LOGGER = logging.getLogger(__name__)

FLEET_FILE = "fleet.toml"  # in <data_dir>/models/, beside the artifacts
MAX_NODES_PER_JOB = 64
MAX_PARALLEL = 4  # transfers at once, whatever the inventory says: the gateway has other work
ROLLBACK_OK = "reverted"  # a rollback job's node outcome when the node runs its previous model
NODE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class Reach:
    """How the gateway would reach a node to flash it, or why it cannot."""

    node_id: str
    entry: NodeEntry | None
    why_not: str = ""

    @property
    def how(self) -> str:
        return self.entry.describe() if self.entry is not None else ""


def reachable(
    cfg: GatewayConfig, heard_over: Mapping[str, str]
) -> tuple[dict[str, Reach], FleetDefaults]:
    """Per node (those heard from, ``node id -> transport``, and those in the inventory).

    Blocking (reads the inventory file): call it on a worker thread.
    """
    path = cfg.data_dir / "models" / FLEET_FILE
    inventory: Inventory | None = None
    problem = ""
    if path.exists():
        try:
            inventory = load_inventory(path)
        except ConfigError as exc:
            problem = f"fix the fleet inventory first: {exc}"
    defaults = inventory.defaults if inventory is not None else FleetDefaults()
    listed = [n.node_id for n in inventory.nodes] if inventory is not None else []
    gateway_ports = {p.path for p in cfg.serial.ports}
    out: dict[str, Reach] = {}
    for node in sorted({*heard_over, *listed}):
        entry = inventory.find(node) if inventory is not None else None
        if problem:
            out[node] = Reach(node, None, problem)
        elif entry is not None:
            busy_port = entry.transport in (Transport.SERIAL, Transport.SMP_SERIAL) and (
                entry.address in gateway_ports
            )
            why = (
                f"{path.name} reaches it on {entry.address}, which the gateway reads data from; "
                "give its management port, or flash it with flash-model while the gateway is off"
            )
            out[node] = Reach(node, None, why) if busy_port else Reach(node, entry)
        elif heard_over.get(node) == "mqtt":
            out[node] = _through_gateway_broker(cfg, node)
        else:
            out[node] = Reach(
                node,
                None,
                f"heard over {heard_over.get(node)}, which cannot carry a model from the "
                f"gateway; list how to reach it in {path} (flash-model's inventory format)",
            )
    return out, defaults


def _through_gateway_broker(cfg: GatewayConfig, node: str) -> Reach:
    mqtt = cfg.mqtt
    if not mqtt.enabled:
        return Reach(node, None, "the gateway's [mqtt] source is off")
    if mqtt.tls or mqtt.username is not None:
        return Reach(
            node,
            None,
            "the broker needs TLS or a login, which flash-model's MQTT transport does not do "
            "yet; flash it with flash-model from the broker's network",
        )
    host, port = mqtt.broker
    host = f"[{host}]" if ":" in host else host
    entry = NodeEntry(
        node, Transport.MQTT, f"mqtt://{host}:{port}", site=cfg.site, origin="[mqtt] url"
    )
    return Reach(node, entry)


def _result(r: FlashResult) -> NodeResult:
    return NodeResult(
        node_id=r.node_id, outcome=r.outcome.value, ok=r.outcome in orchestrate.OK_OUTCOMES,
        reason=r.reason, old_version=r.old_version, new_version=r.new_version,
        bytes_sent=r.bytes_sent, seconds=r.seconds, attempts=r.attempts,
    )  # fmt: skip


class _Progress:
    """:class:`~firmware_tools.flash.orchestrate.FlashObserver` writing into the live job."""

    def __init__(self, job: Job) -> None:
        self._nodes = {n.node_id: n for n in job.nodes}

    def phase(self, node_id: str, text: str) -> None:
        self._nodes[node_id].phase = text

    def progress(self, node_id: str, done: int, total: int) -> None:
        node = self._nodes[node_id]
        node.bytes_done, node.bytes_total = done, total

    def finished(self, result: FlashResult) -> None:
        node = self._nodes[result.node_id]
        node.phase = "finished"
        node.result = _result(result)


@dataclass(frozen=True, slots=True)
class _Work:
    job: Job
    entries: list[NodeEntry]
    defaults: FleetDefaults
    artifact: bytes = b""
    signed: SignedManifest | None = None  # flash jobs only


class FlashJobs:
    """Starts, runs and lists flash jobs; :meth:`run` must be running for jobs to start."""

    def __init__(self, cfg: GatewayConfig, store: JobStore, users: UserStore) -> None:
        self.cfg = cfg
        self.store = store
        self.users = users
        self._queue: asyncio.Queue[_Work] = asyncio.Queue(maxsize=1)
        self._start_lock = asyncio.Lock()
        self._current: Job | None = None
        self._running = False
        self._hashes: dict[tuple[str, float], str] = {}

    @property
    def current(self) -> Job | None:
        return self._current

    async def run(self) -> None:
        """Run the jobs handed over by the start methods, one after the other, until cancelled."""
        self._running = True
        try:
            while True:
                await self._execute(await self._queue.get())
        finally:
            self._running = False

    # -- reading -----------------------------------------------------------------------------

    async def jobs(self, limit: int = 20) -> list[Job]:
        """The newest jobs first; the running one with its live progress."""
        jobs = await asyncio.to_thread(self.store.jobs, limit)
        current = self._current
        return [current if current is not None and j.job_id == current.job_id else j for j in jobs]

    async def get(self, job_id: int) -> Job | None:
        current = self._current
        if current is not None and current.job_id == job_id:
            return current
        return await asyncio.to_thread(self.store.get, job_id)

    async def reach(self, heard_over: Mapping[str, str]) -> dict[str, Reach]:
        return (await asyncio.to_thread(reachable, self.cfg, heard_over))[0]

    # -- starting ----------------------------------------------------------------------------

    async def start_flash(
        self, who: str, sha256: str, node_ids: list[str], heard_over: Mapping[str, str]
    ) -> Job:
        """Start flashing the held artifact ``sha256`` onto ``node_ids``; refusals raise
        :class:`~dashboards.actions.ActionError` saying why."""
        if not SHA256.match(sha256):
            raise ActionError(422, "artifact: the model's sha256 (64 lowercase hex digits)")
        async with self._start_lock:
            entries, defaults = await self._entries(node_ids, heard_over)
            try:
                held, data, signed = await asyncio.to_thread(
                    load_for_flashing, self.cfg, sha256, self._hashes
                )
            except LookupError as exc:
                raise ActionError(404, str(exc)) from None
            except ModelError as exc:
                raise ActionError(409, f"will not send this model: {exc}") from None
            m = signed.manifest
            model = f"{m.name} {m.version} (sequence {m.sequence})"
            job = await self._create("flash", who, model, held.sha256, entries)
            self._queue.put_nowait(_Work(job, entries, defaults, data, signed))
        return job

    async def start_rollback(
        self, who: str, node_ids: list[str], heard_over: Mapping[str, str]
    ) -> Job:
        """Start making ``node_ids`` run their previous (confirmed) model slot again."""
        async with self._start_lock:
            entries, defaults = await self._entries(node_ids, heard_over)
            job = await self._create("rollback", who, "previous model", None, entries)
            self._queue.put_nowait(_Work(job, entries, defaults))
        return job

    async def _entries(
        self, node_ids: list[str], heard_over: Mapping[str, str]
    ) -> tuple[list[NodeEntry], FleetDefaults]:
        if not self._running:
            raise ActionError(503, "flash jobs are not running (the dashboard is starting)")
        if self._current is not None:
            raise ActionError(
                409,
                f"job {self._current.job_id} is still running; one flash job at a time: "
                "wait for it to finish",
            )
        wanted = list(dict.fromkeys(node_ids))
        if not 1 <= len(wanted) <= MAX_NODES_PER_JOB:
            raise ActionError(422, f"nodes: choose 1 to {MAX_NODES_PER_JOB} nodes")
        for node in wanted:
            if not NODE_ID.match(node):
                raise ActionError(422, f"node id {node[:70]!r}: 1-64 of [A-Za-z0-9._-]")
        reach, defaults = await asyncio.to_thread(reachable, self.cfg, heard_over)
        unknown = [n for n in wanted if n not in reach]
        if unknown:
            raise ActionError(404, f"unknown node {unknown[0]!r}: it has not sent anything")
        blocked = [reach[n] for n in wanted if reach[n].entry is None]
        if blocked:
            raise ActionError(
                409, f"cannot reach {blocked[0].node_id} to flash it: {blocked[0].why_not}"
            )
        return [e for n in wanted if (e := reach[n].entry) is not None], defaults

    async def _create(
        self, kind: str, who: str, model: str, sha256: str | None, entries: list[NodeEntry]
    ) -> Job:
        nodes = [(e.node_id, e.transport.value) for e in entries]
        try:
            job = await asyncio.to_thread(
                lambda: self.store.create(
                    kind=kind, who=who, model=model, artifact_sha256=sha256, nodes=nodes
                )
            )
        except (sqlite3.Error, OSError) as exc:
            # Not started: a job nobody could find again after a reload is worse than none.
            raise ActionError(503, f"cannot record the job ({exc}); check the disk") from None
        names = ", ".join(n for n, _ in nodes)
        await asyncio.to_thread(
            self.users.audit, who, f"job.{kind}", names, f"{model}: job {job.job_id}"
        )
        _LOGGER.info("dashboard: job %d: %s of %s to %s by %s", job.job_id, kind, model, names, who)
        self._current = job
        return job

    # -- running -----------------------------------------------------------------------------

    async def _execute(self, work: _Work) -> None:
        job = work.job
        error = ""
        try:
            if job.kind == "flash":
                results = await self._flash(work)
            else:
                results = await self._rollback(work)
        except FieldgateError as exc:  # e.g. an smp-ble node without a controller configured
            results, error = [], str(exc)
        except Exception as exc:
            # One job is one unit of work (house style: `except Exception` around one
            # message): a bug in a transport ends this job with the error, never ingest.
            _LOGGER.exception("dashboard: job %d failed", job.job_id)
            results, error = [], f"internal error: {exc!r}"
        try:
            await asyncio.to_thread(self.store.finish, job.job_id, results, error)
        except (sqlite3.Error, OSError):
            # A storage fault never stops the gateway (architecture, "Trust is earned"): the
            # job reads "interrupted" after the next restart; its results are in this log.
            _LOGGER.exception("dashboard: job %d: cannot record its results", job.job_id)
        finally:
            self._current = None
        ok = sum(r.ok for r in results)
        _LOGGER.info("dashboard: job %d done: %d of %d nodes ok", job.job_id, ok, len(job.nodes))

    @staticmethod
    def _links(defaults: FleetDefaults) -> LinkOptions:
        return LinkOptions(baud=defaults.baud, ble_hci=defaults.ble_hci)

    async def _flash(self, work: _Work) -> list[NodeResult]:
        d = work.defaults
        options = orchestrate.FlashOptions(
            retries=d.retries, parallel=min(d.parallel, MAX_PARALLEL),
            activate_timeout_s=d.activate_timeout_s,
        )  # fmt: skip
        assert work.signed is not None
        expected = {e.node_id: e.target for e in work.entries if e.target is not None}
        async with FlasherFactory(self._links(d)) as factory:
            flashers = [factory.create(e) for e in work.entries]
            results = await orchestrate.flash_fleet(
                flashers, work.artifact, work.signed,
                options=options, observer=_Progress(work.job), expected_targets=expected,
            )  # fmt: skip
        return [_result(r) for r in results]

    async def _rollback(self, work: _Work) -> list[NodeResult]:
        """Like ``flash-model rollback``, node after node."""
        nodes = {n.node_id: n for n in work.job.nodes}
        results = []
        loop = asyncio.get_running_loop()
        async with FlasherFactory(self._links(work.defaults)) as factory:
            for entry in work.entries:
                state = nodes[entry.node_id]
                started = loop.time()
                state.phase = "info"
                flasher = factory.create(entry)
                old = None
                try:
                    before = await flasher.info()
                    old = before.active.model_version if before.active else None
                    state.phase = "rollback"
                    after = await flasher.rollback()
                    new = after.active.model_version if after.active else None
                    result = NodeResult(
                        entry.node_id, ROLLBACK_OK, True, f"runs {new} again", old, new,
                        seconds=round(loop.time() - started, 3), attempts=1,
                    )  # fmt: skip
                except NodeRefused as exc:
                    result = NodeResult(entry.node_id, "refused", False, str(exc), old)
                except NodeUnreachable as exc:
                    result = NodeResult(entry.node_id, "unreachable", False, str(exc), old)
                except (FlashError, OSError) as exc:
                    result = NodeResult(entry.node_id, "failed", False, str(exc), old)
                state.phase, state.result = "finished", result
                results.append(result)
        return results
