"""``python -m bench.soak [--duration S] [--report DIR]``: see ``bench/soak/__init__.py``.

Last line: ``RESULT soak lost=<n> unexpected=<n> duplicated=<n> recovered=<n> rss_growth_mb=<x>``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from pathlib import Path

from bench.soak.faults import FAULT_KINDS
from bench.soak.run import Options, soak
from bench.soak.stack import FleetShape


def seconds(text: str) -> float:
    """``120``, ``90s``, ``30m`` or ``1h`` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def fault_kinds(text: str) -> frozenset[str]:
    """``none`` or a comma-separated subset of :data:`FAULT_KINDS`."""
    if text.strip() == "none":
        return frozenset()
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(kinds - set(FAULT_KINDS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}"
        )
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument(
        "--duration", type=seconds, default=120.0, help="time of faults: 120, 30m, 1h"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serial", type=int, default=4, help="serial nodes")
    parser.add_argument("--mqtt", type=int, default=4, help="MQTT nodes")
    parser.add_argument("--ble", type=int, default=2, help="BLE nodes")
    parser.add_argument("--rate", type=float, default=2.0, help="samples/s per node")
    parser.add_argument("--report", type=Path, help="write report.json and PNG plots here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the gateway's log")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument(
        "--faults",
        type=fault_kinds,
        default=None,
        metavar="KIND,...|none",
        help=f"inject only these fault kinds (default: all of {', '.join(FAULT_KINDS)}); "
        "'none' or a list without gateway_kill9 keeps one gateway process for the whole run, "
        "so rss_growth_mb is its growth over the whole duration",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    shape = FleetShape(args.serial, args.mqtt, args.ble, args.rate, seed=args.seed)
    t0 = time.monotonic()
    result = asyncio.run(
        soak(Options(args.duration, shape, args.seed, args.report, args.keep_logs, args.faults))
    )
    v = result["verdict"]
    g = result["growth"]
    assert isinstance(v, dict)
    assert isinstance(g, dict)
    print(json.dumps(result, indent=1, default=str))
    print(
        f"soak: {time.monotonic() - t0:.0f} s wall; emitted {v['emitted']} readings, "
        f"acknowledged {v['acknowledged']}, journal {v['journal']}, store {v['store']}; "
        f"missing in store {v['missing_in_store']} (accounted: {v['accounted']}); "
        f"redelivered {v['redelivered']}; timestamp collisions {v['collisions']}; gateway RSS {g['rss_end_mb']:.0f} MB, "
        f"fd growth {g['fd_growth']:.1f} over a {g['life_s']:.0f} s life"
    )
    if args.report is not None:
        print(f"report: {args.report.resolve()}")
    print(
        f"RESULT soak lost={v['lost']} unexpected={v['unexpected']} "
        f"duplicated={v['duplicated']} recovered={v['recovered']} "
        f"rss_growth_mb={g['rss_growth_mb']:.1f}"
    )
    return 0 if v["lost"] == v["unexpected"] == v["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
