"""The simulated node's firmware logic, driven with explicit times (no clock, no I/O)."""

from __future__ import annotations

import pytest

from firmware_tools.sim.node import NodeConfig, NodeLogic
from gateway.protocol.messages import (
    Ack,
    Channel,
    Command,
    CommandKind,
    ReadingBatch,
    Status,
    TimeBase,
    UplinkMessage,
)

CHANNELS = (Channel("current", "A"), Channel("pressure", "bar"))


def make_node(**overrides: object) -> NodeLogic:
    settings: dict[str, object] = {
        "node_id": "pump-01",
        "channels": CHANNELS,
        "batch_size": 4,
        "status_interval_ms": 1_000_000,  # keep heartbeats out of the way unless tested
        "resend_timeout_ms": 1_000,
        "max_unacked": 8,
        "seed": 7,
    }
    settings.update(overrides)
    node = NodeLogic(NodeConfig(**settings))  # type: ignore[arg-type]
    node.poll(0)  # the boot heartbeat (seq 1)
    return node


def feed(node: NodeLogic, n: int, start_ms: int = 0, step_ms: int = 100) -> list[UplinkMessage]:
    out: list[UplinkMessage] = []
    for i in range(n):
        out += node.add_sample(start_ms + i * step_ms, (1.0 + i, 2.0))
    return out


def batches(msgs: list[UplinkMessage]) -> list[ReadingBatch]:
    return [m for m in msgs if isinstance(m, ReadingBatch)]


def test_boot_heartbeat_takes_seq_1_and_batches_take_one_seq_per_sample() -> None:
    node = NodeLogic(NodeConfig(node_id="pump-01", channels=CHANNELS, batch_size=4, seed=1))
    (boot_status,) = node.poll(0)
    assert isinstance(boot_status, Status)
    assert boot_status.seq == 1
    assert boot_status.oldest_unacked_seq == 1  # the status itself is held

    sent = batches(feed(node, 12))
    assert [(b.seq, b.last_seq) for b in sent] == [(2, 5), (6, 9), (10, 13)]
    assert all(b.boot_id == boot_status.boot_id for b in sent)
    assert node.next_seq == 14


def test_samples_carry_uptime_ticks_with_configured_skew_and_drift() -> None:
    node = make_node(clock_offset_ms=500, clock_drift_ppm=1000.0)  # +0.1 % fast
    (batch,) = batches(feed(node, 4, start_ms=10_000, step_ms=1_000))
    assert batch.time_base is TimeBase.UPTIME_MS
    assert [s.t for s in batch.samples] == [10_510, 11_511, 12_512, 13_513]


def test_ack_releases_everything_up_to_its_seq_and_nothing_after() -> None:
    node = make_node()
    feed(node, 12)  # status 1, batches 2-5, 6-9, 10-13
    node.handle(Ack("pump-01", node.boot_id, up_to_seq=9), now_ms=1_500)

    assert [m.seq for m in node.unacked] == [10]
    assert node.stats.acked == 3
    assert node.stats.acked_samples == 8
    assert node.oldest_unacked_seq == 10


def test_unacked_messages_are_resent_oldest_first_after_the_timeout_until_acked() -> None:
    node = make_node(resend_burst=2)
    feed(node, 8)  # status 1, batches 2-5 and 6-9, all sent by t=700

    assert [m.seq for m in node.poll(1_000)] == [1]  # only the boot status is overdue
    assert [m.seq for m in node.poll(1_700)] == [2, 6]  # both batches, oldest first
    node.poll(2_000)  # the status again
    assert [m.seq for m in node.poll(2_700)] == [2, 6]

    node.handle(Ack("pump-01", node.boot_id, up_to_seq=9), now_ms=2_800)
    assert node.poll(10_000) == []
    assert node.stats.resent == 6


def test_resends_per_poll_are_capped_by_the_burst_size() -> None:
    node = make_node(resend_burst=2)
    feed(node, 8)
    assert [m.seq for m in node.poll(5_000)] == [1, 2]
    assert [m.seq for m in node.poll(5_000)] == [6]


def test_a_full_buffer_evicts_the_oldest_and_status_reports_where_data_now_starts() -> None:
    node = make_node(batch_size=1, max_unacked=5)
    feed(node, 10)  # status seq 1, then single-sample batches seq 2..11

    assert [m.seq for m in node.unacked] == [7, 8, 9, 10, 11]
    assert node.stats.evicted == 6  # the status and five batches
    assert node.stats.evicted_samples == 5

    status = node.make_status(now_ms=2_000)
    assert status.seq == 12
    assert status.oldest_unacked_seq == 8  # holding the status pushed seq 7 out too


def test_acks_for_another_boot_or_node_are_ignored_and_counted() -> None:
    node = make_node()
    feed(node, 4)
    node.handle(Ack("pump-01", node.boot_id ^ 1, up_to_seq=100), now_ms=500)
    node.handle(Ack("pump-02", node.boot_id, up_to_seq=100), now_ms=500)

    assert len(node.unacked) == 2
    assert node.stats.stale_acks == 2


def test_reboot_gets_a_new_boot_id_restarts_seq_and_counts_ram_lost() -> None:
    node = make_node()
    feed(node, 6)  # status + one batch held, two samples pending
    old_boot = node.boot_id

    node.reboot(now_ms=5_000)

    assert node.boot_id != old_boot
    assert node.unacked == ()
    assert node.stats.reboots == 1
    assert node.stats.lost_on_reboot == 2
    assert node.stats.lost_samples_on_reboot == 4 + 2
    (status,) = node.poll(5_000)
    assert isinstance(status, Status)
    assert (status.seq, status.uptime_ms, status.boot_id) == (1, 0, node.boot_id)


def test_ack_from_before_a_reboot_does_not_release_new_messages() -> None:
    node = make_node()
    old_boot = node.boot_id
    node.reboot(now_ms=100)
    node.poll(100)
    node.handle(Ack("pump-01", old_boot, up_to_seq=50), now_ms=200)
    assert [m.seq for m in node.unacked] == [1]


def test_boot_ids_are_deterministic_per_seed() -> None:
    assert make_node(seed=3).boot_id == make_node(seed=3).boot_id
    assert make_node(seed=3).boot_id != make_node(seed=4).boot_id


def test_set_threshold_and_actuate_commands_change_node_state_once_per_cmd_id() -> None:
    node = make_node()
    node.handle(Command("pump-01", 1, CommandKind.SET_THRESHOLD, (("threshold", 0.8),)), now_ms=10)
    node.handle(
        Command("pump-01", 2, CommandKind.ACTUATE, (("output", "valve"), ("state", True))),
        now_ms=20,
    )
    repeat = Command("pump-01", 2, CommandKind.ACTUATE, (("output", "valve"), ("state", False)))
    node.handle(repeat, now_ms=30)

    assert node.threshold == 0.8
    assert node.outputs == {"valve": True}
    assert node.stats.commands == 2
    assert node.stats.duplicate_commands == 1


def test_malformed_command_is_rejected_without_changing_state() -> None:
    node = make_node(threshold=0.5)
    node.handle(
        Command("pump-01", 9, CommandKind.SET_THRESHOLD, (("threshold", "high"),)), now_ms=0
    )
    assert node.threshold == 0.5
    assert node.stats.rejected_commands == 1


def test_request_info_answers_with_a_status_immediately() -> None:
    node = make_node(battery_full_mv=4000, battery_drain_mv_per_h=3600.0)
    feed(node, 4)
    (reply,) = node.handle(Command("pump-01", 5, CommandKind.REQUEST_INFO), now_ms=60_000)
    assert isinstance(reply, Status)
    assert reply.seq == 6
    assert reply.oldest_unacked_seq == 1
    assert reply.battery_mv is not None
    assert 3_930 <= reply.battery_mv <= 3_950  # 60 mV drained in a minute at 3.6 V/h
    assert reply.uptime_ms == 60_000
    assert reply.free_ram_bytes is not None
    assert reply.free_ram_bytes > 0


def test_reboot_command_starts_a_new_boot() -> None:
    node = make_node()
    before = node.boot_id
    node.handle(Command("pump-01", 1, CommandKind.REBOOT), now_ms=100)
    assert node.boot_id != before
    assert node.stats.reboots == 1


def test_partial_batch_is_flushed_when_it_gets_old() -> None:
    node = make_node(batch_size=100, batch_max_age_ms=1_000)
    feed(node, 3)  # at 0, 100, 200 ms
    assert node.poll(900) == []
    (batch,) = batches(node.poll(1_000))
    assert len(batch.samples) == 3
    assert node.next_deadline_ms() == 2_000  # its own resend


def test_heartbeat_follows_the_status_interval() -> None:
    node = make_node(status_interval_ms=5_000, resend_timeout_ms=100_000)
    assert node.poll(4_999) == []
    (status,) = node.poll(5_000)
    assert isinstance(status, Status)
    assert node.next_deadline_ms() == 10_000


def test_wrong_number_of_values_is_a_caller_bug() -> None:
    node = make_node()
    with pytest.raises(ValueError, match="2 channels"):
        node.add_sample(0, (1.0,))


def test_invalid_node_id_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid node id"):
        NodeConfig(node_id="pump 01", channels=CHANNELS)
