"""freeze_startup_heap: start-up objects leave the cycle collector's work, garbage does not stay."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.app import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_live_objects_are_frozen_and_garbage_cycles_are_collected_first(thawed: None) -> None:
    live = [[i] for i in range(10)]  # lists: objects the cycle collector tracks
    a, b = Node(), Node()
    a.other, b.other = b, a
    dead = weakref.ref(a)
    del a, b  # an unreachable cycle: only the cycle collector can free it
    freeze_startup_heap()
    assert dead() is None, "the garbage cycle was collected, not frozen"
    assert gc.get_freeze_count() > len(live)
    collectable = {id(o) for o in gc.get_objects()}  # the permanent generation is not listed
    assert all(gc.is_tracked(x) and id(x) not in collectable for x in live)
