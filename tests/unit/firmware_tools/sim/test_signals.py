"""Synthetic pump signals: deterministic, physically plausible, labelled where faults are."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_tools.sim.signals import (
    PUMP_CHANNELS,
    BearingGeometry,
    Fault,
    FaultKind,
    PumpSignal,
    VibrationModel,
    parse_fault_spec,
)

COL = {c.name: i for i, c in enumerate(PUMP_CHANNELS)}


def arrays(sig: PumpSignal, n: int) -> tuple[np.ndarray, np.ndarray]:
    samples = sig.take(n)
    return np.array([s.values for s in samples]), np.array([s.label for s in samples])


def test_same_seed_gives_identical_samples_and_another_seed_does_not() -> None:
    faults = [Fault(FaultKind.SPIKES, 10, 20)]
    a = PumpSignal(rate_hz=2, seed=42, faults=faults).take(100)
    b = PumpSignal(rate_hz=2, seed=42, faults=faults).take(100)
    c = PumpSignal(rate_hz=2, seed=43, faults=faults).take(100)
    assert a == b
    assert a != c


def test_samples_are_labelled_exactly_inside_the_fault_window() -> None:
    sig = PumpSignal(rate_hz=1, faults=[Fault(FaultKind.CAVITATION, 30, 20)])
    samples = sig.take(80)
    labelled = [s.t_s for s in samples if s.label == FaultKind.CAVITATION]
    assert labelled == [float(t) for t in range(30, 50)]
    assert all(s.label == 0 and s.faults == () for s in samples if not 30 <= s.t_s < 50)
    assert [s.t_s for s in samples if s.changepoint] == [30.0]


def test_normal_operation_sits_at_the_pump_operating_point() -> None:
    values, _ = arrays(PumpSignal(rate_hz=1, seed=1), 600)
    mean = values.mean(axis=0)
    assert mean[COL["current"]] == pytest.approx(2.2, abs=0.15)
    assert mean[COL["pressure"]] == pytest.approx(1.0, abs=0.1)
    assert mean[COL["flow"]] == pytest.approx(125, rel=0.08)
    assert 30 < mean[COL["temperature"]] < 80


def test_closing_the_valve_cuts_flow_raises_pressure_and_lowers_current() -> None:
    sig = PumpSignal(rate_hz=1, seed=2, faults=[Fault(FaultKind.VALVE_CLOSED, 100, 100)])
    values, labels = arrays(sig, 200)
    normal = values[:100].mean(axis=0)
    closed = values[150:200].mean(axis=0)  # after the closing ramp
    assert (labels[100:] == FaultKind.VALVE_CLOSED).all()
    assert closed[COL["flow"]] < 0.2 * normal[COL["flow"]]
    assert closed[COL["pressure"]] > normal[COL["pressure"]] + 0.3
    assert closed[COL["current"]] < normal[COL["current"]] - 0.4


def test_cavitation_makes_pressure_rough_and_vibration_high() -> None:
    sig = PumpSignal(rate_hz=1, seed=3, faults=[Fault(FaultKind.CAVITATION, 100, 100)])
    values, _ = arrays(sig, 200)
    normal, cav = values[:100], values[130:200]
    assert cav[:, COL["pressure"]].std() > 3 * normal[:, COL["pressure"]].std()
    assert cav[:, COL["vib_rms"]].mean() > 1.2 * normal[:, COL["vib_rms"]].mean()


def test_overheating_raises_temperature_within_its_window() -> None:
    sig = PumpSignal(rate_hz=1, seed=4, faults=[Fault(FaultKind.OVERHEATING, 60, 600)])
    values, _ = arrays(sig, 660)
    assert values[600:, COL["temperature"]].mean() > values[:60, COL["temperature"]].mean() + 15


def test_stuck_sensor_repeats_one_value_then_recovers() -> None:
    fault = Fault(FaultKind.SENSOR_STUCK, 20, 30, channel="flow")
    values, _ = arrays(PumpSignal(rate_hz=1, seed=5, faults=[fault]), 80)
    stuck = values[20:50, COL["flow"]]
    assert np.unique(stuck).size == 1
    assert np.unique(values[50:80, COL["flow"]]).size == 30


def test_spikes_hit_only_the_chosen_channel() -> None:
    fault = Fault(FaultKind.SPIKES, 0, 1000, severity=2.0, channel="pressure")
    clean, _ = arrays(PumpSignal(rate_hz=1, seed=6), 1000)
    spiky, _ = arrays(PumpSignal(rate_hz=1, seed=6, faults=[fault]), 1000)
    jumps = np.abs(spiky[:, COL["pressure"]] - np.median(clean[:, COL["pressure"]]))
    assert (jumps > 0.5).sum() >= 20
    assert np.abs(spiky[:, COL["current"]] - clean[:, COL["current"]]).max() < 0.5


def test_bearing_geometry_gives_textbook_6205_fault_frequencies() -> None:
    bearing = BearingGeometry()
    assert bearing.bpfo(1.0) == pytest.approx(3.585, abs=0.01)
    assert bearing.bpfi(1.0) == pytest.approx(5.415, abs=0.01)


@pytest.mark.parametrize("kind", [FaultKind.BEARING_OUTER, FaultKind.BEARING_INNER])
def test_bearing_fault_puts_energy_at_its_ball_pass_frequency(kind: FaultKind) -> None:
    model = VibrationModel()
    fs, n = 12_800.0, 16_384
    freq = (
        model.bearing.bpfo(model.shaft_hz)
        if kind is FaultKind.BEARING_OUTER
        else model.bearing.bpfi(model.shaft_hz)
    )

    def amplitude_at(x: np.ndarray, f: float) -> float:
        spectrum = np.abs(np.fft.rfft(x * np.hanning(n)))
        k = round(f * n / fs)
        return float(spectrum[k - 2 : k + 3].max())

    healthy = model.window(n, fs, seed=1)
    faulty = model.window(n, fs, faults=[(kind, 1.0)], seed=1)
    assert amplitude_at(faulty, freq) > 10 * amplitude_at(healthy, freq)
    rms = float(np.sqrt(np.mean(faulty**2)))
    assert rms == pytest.approx(model.expected_rms([(kind, 1.0)]), rel=0.15)


def test_vibration_window_is_reproducible_for_the_same_start() -> None:
    model = VibrationModel()
    a = model.window(256, 5_000.0, start_s=1.0, seed=9)
    assert np.array_equal(a, model.window(256, 5_000.0, start_s=1.0, seed=9))


def test_fault_spec_parses_node_kind_window_severity_and_channel() -> None:
    node, fault = parse_fault_spec("pump-02:valve-closed:30:15:0.5")
    assert node == "pump-02"
    assert fault == Fault(FaultKind.VALVE_CLOSED, 30.0, 15.0, 0.5)
    anywhere, stuck = parse_fault_spec("*:sensor_stuck:0:10::flow")
    assert anywhere is None
    assert stuck.channel == "flow"


@pytest.mark.parametrize(
    "spec", ["pump:cavitation:10", "pump:melting:0:10", "pump:spikes:0:-1", "p:spikes:x:1"]
)
def test_bad_fault_specs_say_what_is_wrong(spec: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        parse_fault_spec(spec)


def test_unknown_fault_channel_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        PumpSignal(faults=[Fault(FaultKind.SPIKES, 0, 1, channel="humidity")])
