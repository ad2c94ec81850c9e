"""The soak's ``--faults`` selection: which kinds run, and a run with none at all."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any, cast

import pytest

from bench.soak.__main__ import fault_kinds
from bench.soak.faults import FAULT_KINDS, FaultLog, Faults


def faults(**kwargs: Any) -> tuple[Faults, FaultLog]:
    log = FaultLog()
    # No stack: these tests never inject, they only look at the selection.
    return Faults(cast(Any, None), log, random.Random(0), **kwargs), log


def test_every_kind_is_listed_for_the_command_line() -> None:
    chosen, log = faults(disk=True)
    assert sorted(chosen.kinds) == sorted(FAULT_KINDS)
    assert log.skipped == set()


def test_a_selection_keeps_only_those_kinds_and_says_the_rest_were_skipped() -> None:
    chosen, log = faults(disk=True, only=frozenset({"ble_drop", "broker_restart"}))
    assert sorted(chosen.kinds) == ["ble_drop", "broker_restart"]
    assert log.skipped == set(FAULT_KINDS) - {"ble_drop", "broker_restart"}


def test_without_faults_the_run_just_waits_for_the_duration() -> None:
    chosen, log = faults(disk=False, only=frozenset())
    t0 = time.monotonic()
    asyncio.run(chosen.run(t0 + 0.2))
    assert time.monotonic() - t0 >= 0.2
    assert log.events == []


def test_the_command_line_takes_none_or_known_kinds_and_names_an_unknown_one() -> None:
    assert fault_kinds("none") == frozenset()
    assert fault_kinds("gateway_kill9, disk_full") == {"gateway_kill9", "disk_full"}
    with pytest.raises(argparse.ArgumentTypeError, match=r"unknown fault kind.*kill9"):
        fault_kinds("kill9")
