"""Imports point down: the wire protocol at the bottom, simulator and flasher apart.

Every module of the project is read with :mod:`ast` (nothing is imported) and its imports,
module-level and lazy ones inside functions alike, are checked against the layering of
docs/architecture.md ("Imports point down"):

* ``gateway.protocol`` imports nothing of ours but ``gateway.errors``;
* the simulator (``firmware_tools.sim``) uses the protocol, the BLE backend and the
  foundation modules only, never the flasher; the flasher (``firmware_tools.flash``) never
  the simulator;
* ``gateway`` imports ``firmware_tools`` only in its composition modules (the demo and the
  CLI entry);
* ``dashboards`` imports ``firmware_tools`` only in ``dashboards.jobs``, and there only the
  flasher (see ``FLASH_JOBS``);
* the service (``fieldgate run``) reaches neither the simulator, nor ``rich.live``, nor amqtt.

The rules are checked against synthetic sources too, so a rule that could not fail would
show up here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "firmware_tools", "tinymodels", "dashboards")
OURS = (*PACKAGES, "tests", "bench")

# Modules every layer may use: they import nothing of ours (checked below).
FOUNDATION = ("gateway.errors", "gateway.aio_compat", "gateway.retry")
# The only gateway code that may import firmware_tools (composition at the top).
COMPOSITION = ("gateway.demo", "gateway.cli")
# Never on the service's import path.
NOT_IN_SERVICE = ("firmware_tools", "rich.live", "amqtt")
# The one exception (issue 13): the dashboard, served by the gateway process, starts flash
# jobs from its Models page, and they must run the very code of `flash-model flash` and
# `flash-model rollback` (pre-flight checks, resumable retries, self-test verdicts) rather
# than a copy of it. So this one module may import firmware_tools' flasher, and the service
# may reach the flasher through it; never the simulator, the CLI or the model tools.
FLASH_JOBS = "dashboards.jobs"
FLASHER = ("firmware_tools.flash",)
# `python -m dashboards.screenshots` composes a gateway, simulated nodes and a browser, like
# the demo; it is a developer tool the service never imports.
DASHBOARD_COMPOSITION = ("dashboards.screenshots",)


@dataclass(frozen=True, slots=True)
class Import:
    target: str  # absolute dotted name: the module, or module.name for `from m import name`
    line: int


def _within(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_ours(name: str) -> bool:
    return name.split(".", maxsplit=1)[0] in OURS


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (lazy ones included) as absolute dotted names.

    ``from a.b import c`` yields ``a.b.c`` (c may be a module or a name; the rules match by
    prefix, so both read the same); relative imports are resolved against ``module``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            found.extend(Import(f"{base}.{alias.name}", node.lineno) for alias in node.names)
    return found


def _protocol_rule(target: str) -> str | None:
    if _within(target, ("gateway.protocol", "gateway.errors")):
        return None
    return "the protocol layer imports nothing of ours but gateway.errors"


def _foundation_rule(target: str) -> str | None:
    return "foundation modules import nothing of ours"


def _simulator_rule(target: str) -> str | None:
    allowed = ("firmware_tools.sim", "gateway.protocol", "gateway.ble", "tinymodels", *FOUNDATION)
    if _within(target, allowed):
        return None
    return "the simulator uses only the protocol, the BLE backend and tinymodels"


def _flasher_rule(target: str) -> str | None:
    if _within(target, ("firmware_tools.sim",)):
        return "the flasher never imports the simulator"
    if _within(target, ("gateway",)) and not _within(
        target, ("gateway.protocol", "gateway.ble", *FOUNDATION)
    ):
        return "the flasher uses only the protocol and the BLE backend of gateway"
    return None


def _gateway_rule(target: str) -> str | None:
    if _within(target, ("firmware_tools",)):
        return "gateway imports firmware_tools only in the demo and the CLI entry"
    return None


def _flash_jobs_rule(target: str) -> str | None:
    if _within(target, ("firmware_tools",)) and not _within(target, FLASHER):
        return "dashboards.jobs imports only the flasher (firmware_tools.flash) of firmware_tools"
    return None


def _dashboards_rule(target: str) -> str | None:
    if _within(target, ("firmware_tools",)):
        return f"dashboards imports firmware_tools only in {FLASH_JOBS} (the flash jobs)"
    return None


def _no_rule(target: str) -> str | None:
    return None


# First match wins: (modules, the rule their imports of ours follow).
RULES: tuple[tuple[tuple[str, ...], Callable[[str], str | None]], ...] = (
    (("gateway.protocol",), _protocol_rule),
    (FOUNDATION, _foundation_rule),
    (("firmware_tools.sim",), _simulator_rule),
    (("firmware_tools.flash",), _flasher_rule),
    (COMPOSITION, _no_rule),
    (("gateway",), _gateway_rule),
    ((FLASH_JOBS,), _flash_jobs_rule),
    (DASHBOARD_COMPOSITION, _no_rule),
    (("dashboards",), _dashboards_rule),
)


def violations(module: str, imports: Iterable[Import]) -> list[str]:
    """The layering rules broken by ``module`` importing ``imports``."""
    rule = next((r for prefixes, r in RULES if _within(module, prefixes)), _no_rule)
    out = []
    for imp in imports:
        why = rule(imp.target) if _is_ours(imp.target) else None
        if why:
            out.append(f"{module}:{imp.line} imports {imp.target}: {why}")
    return out


def _modules() -> Iterator[tuple[str, Path, bool]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            is_package = rel.name == "__init__"
            parts = rel.parts[:-1] if is_package else rel.parts
            yield ".".join(parts), path, is_package


def _all_imports() -> dict[str, list[Import]]:
    return {
        name: imports_of(path.read_text(encoding="utf-8"), name, is_package=is_package)
        for name, path, is_package in _modules()
    }


def test_every_module_imports_only_downwards() -> None:
    found = [v for module, imps in _all_imports().items() for v in violations(module, imps)]
    assert found == []


def test_the_scan_sees_the_whole_project() -> None:
    # A scan that found nothing would pass the test above vacuously.
    graph = _all_imports()
    assert {"gateway.protocol.payload.decode", "firmware_tools.sim.fleet", "gateway.app"} <= set(
        graph
    )
    assert any(i.target.startswith("gateway.protocol") for i in graph["firmware_tools.sim.fleet"])


def _closure(graph: dict[str, list[Import]], roots: Iterable[str]) -> dict[str, str]:
    """Modules reachable from ``roots`` through our modules -> the module that imports them."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        module = todo.pop()
        for imp in graph.get(module, []):
            # `from a.b import c`: c is a module of ours (a.b.c) or a name in a.b.
            target = imp.target if imp.target in graph else imp.target.rpartition(".")[0]
            for name in {imp.target, target}:
                if name not in seen:
                    seen[name] = module
                    if name in graph:
                        todo.append(name)
    return seen


def test_the_service_imports_neither_the_simulator_nor_the_live_view_nor_amqtt() -> None:
    """``fieldgate run`` builds gateway.app.Gateway from gateway.config (lazy imports too)."""
    graph = _all_imports()
    reached = _closure(graph, ["gateway.app", "gateway.config"])
    bad = {
        m: by for m, by in reached.items() if _within(m, NOT_IN_SERVICE) and not _within(m, FLASHER)
    }
    assert bad == {}
    assert "gateway.sources.mqtt" in reached  # the closure follows lazy imports
    # The flasher is reached only through the dashboard's flash jobs (FLASH_JOBS).
    entries = {by for m, by in reached.items() if _within(m, FLASHER) and not _within(by, FLASHER)}
    assert entries <= {FLASH_JOBS}


def test_fieldgate_run_loads_no_simulator_at_run_time() -> None:
    """The CLI registers `simulate` and `demo` lazily; resolving `run` must not load them."""
    code = (
        "import sys, typer, typer.main\n"
        "from gateway.cli import app\n"
        "group = typer.main.get_command(app)\n"
        "ctx = typer.Context(group)\n"
        "assert group.get_command(ctx, 'run') is not None\n"
        "import gateway.app\n"
        f"print(sorted(m for m in sys.modules if m.startswith({NOT_IN_SERVICE!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- the rules themselves can fail -----------------------------------------------------------

BAD = [
    ("gateway.protocol.framing", "from gateway.config import GatewayConfig"),
    ("gateway.protocol.payload.decode", "from ...store import journal"),
    ("gateway.protocol.xfer", "def f():\n    from firmware_tools.flash import api\n"),
    ("firmware_tools.sim.fleet", "from firmware_tools.flash.api import NodeFlasher"),
    ("firmware_tools.sim.node", "from gateway.sources.common import now_ms"),
    ("firmware_tools.flash.smp_flasher", "from firmware_tools.sim.smp_server import SmpServer"),
    ("firmware_tools.flash.api", "from ..sim import slots"),
    ("gateway.pipeline.hotswap", "from firmware_tools.signing import sign_manifest"),
    ("gateway.app", "import firmware_tools.sim.fleet"),
    ("gateway.retry", "from gateway.metrics import Metrics"),
    ("dashboards.routes.pages", "from firmware_tools.flash.orchestrate import flash_fleet"),
    ("dashboards.jobs", "from firmware_tools.sim.fleet import Simulator"),
    ("dashboards.jobs", "def f():\n    from firmware_tools.cli.fleet import flash\n"),
]
GOOD = [
    ("gateway.protocol.framing", "from gateway.errors import FrameError"),
    ("gateway.protocol.payload.decode", "from .fast import fast_reading_batch"),
    ("firmware_tools.sim.fleet", "from gateway.protocol.manifest import ModelManifest"),
    ("firmware_tools.sim.ble_link", "from gateway.ble.transport import open_hci"),
    ("firmware_tools.flash.smp_flasher", "from gateway.protocol.smp_profile import INFO_PATH"),
    ("gateway.demo.run", "from firmware_tools.sim.fleet import Simulator"),
    ("gateway.sources.mqtt", "import paho.mqtt.client as paho"),
    ("dashboards.jobs", "from firmware_tools.flash.orchestrate import flash_fleet"),
    ("dashboards.routes.api", "from dashboards.jobs import FlashJobs"),
]


@pytest.mark.parametrize(("module", "source"), BAD)
def test_a_bad_import_is_reported(module: str, source: str) -> None:
    found = violations(module, imports_of(source, module))
    assert len(found) == 1
    assert found[0].startswith(f"{module}:")


@pytest.mark.parametrize(("module", "source"), GOOD)
def test_an_allowed_import_passes(module: str, source: str) -> None:
    assert violations(module, imports_of(source, module)) == []


def test_relative_imports_resolve_against_the_package() -> None:
    imps = imports_of(
        "from . import fast\nfrom ..messages import Ack", "gateway.protocol.payload.decode"
    )
    assert [i.target for i in imps] == [
        "gateway.protocol.payload.fast",
        "gateway.protocol.messages.Ack",
    ]
    imps = imports_of("from . import fast", "gateway.protocol.payload", is_package=True)
    assert [i.target for i in imps] == ["gateway.protocol.payload.fast"]


def test_the_service_closure_follows_imports_to_a_forbidden_module() -> None:
    graph = {
        "gateway.app": [Import("gateway.sources.mqtt", 1)],
        "gateway.sources.mqtt": [Import("amqtt.broker.Broker", 3)],
    }
    reached = _closure(graph, ["gateway.app"])
    assert reached["amqtt.broker"] == "gateway.sources.mqtt"


MAX_MODULE_LINES = 500


def test_no_module_is_longer_than_the_house_limit() -> None:
    """Past ~500 lines a module does more than one job (docs/house-style.md): split it."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in sorted(ROOT.rglob("*.py"))
        if ".venv" not in path.parts
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
