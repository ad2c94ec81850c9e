"""What keeps the service's resident memory down (docs/benchmarks.md, "issue 18: the
gateway's memory"), each checked in a fresh interpreter so the test process's own imports
and malloc state do not hide a regression."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_the_service_with_forwarding_webhooks_and_dashboard_does_not_import_aiohttp() -> None:
    # aiohttp's import alone cost about 9 MB of RSS; the forwarder and the webhook POST
    # through gateway.http_post (h11) instead.
    loaded = _run(
        """
        import sys
        import gateway.app, gateway.cli, gateway.forward.forwarder, gateway.outputs.dispatch
        import gateway.outputs.webhook, dashboards.server
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("aiohttp", "httpx")))
        """
    )
    assert loaded == "[]"


_BLOCK_REUSE = """
    import ctypes, sys
    from gateway.process_memory import tune_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "tuned":
        assert tune_malloc()
    block = bytearray(4 << 20)  # 4 MiB: a mapping of its own, then freed
    del block
    before = libc.mallinfo2().hblks
    block = bytearray(4 << 20)  # the same size again
    print(libc.mallinfo2().hblks - before)  # 1: mapped on its own again; 0: from the heap
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_with_fixed_thresholds_a_large_block_keeps_a_mapping_of_its_own() -> None:
    # Untuned glibc raises its mmap threshold when a mapped block is freed, so the next
    # block of that size comes from the heap and stays resident after it is freed.
    assert _run(_BLOCK_REUSE, "default") == "0"
    assert _run(_BLOCK_REUSE, "tuned") == "1"


def test_outputs_that_are_not_enabled_are_not_imported() -> None:
    # aiomqtt (and paho under it) for the local MQTT output, smtplib for e-mail.
    loaded = _run(
        """
        import sys, tempfile
        from pathlib import Path
        from gateway.config import GatewayConfig
        from gateway.outputs import AlertBus, AlertOutputs

        def made(**outputs):
            cfg = GatewayConfig(outputs=outputs).outputs
            AlertOutputs(cfg, AlertBus(), None, Path(tempfile.mkdtemp()), site="s")
            return [m for m in ("aiomqtt", "smtplib") if m in sys.modules]

        print(made(), made(local_mqtt={"enabled": True}), made(email={"enabled": True,
              "host": "127.0.0.1", "from_addr": "a@b.example", "to_addrs": ["c@d.example"]}))
        """
    )
    assert loaded == "[] ['aiomqtt'] ['aiomqtt', 'smtplib']"
