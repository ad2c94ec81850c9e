"""Replaying SKAB-layout CSV folders as a node's channels and labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_tools.sim.replay import SKAB_CHANNELS, ReplaySignal, read_skab_csv

HEADER = (
    "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;"
    "Thermocouple;Voltage;Volume Flow RateRMS"
)


def write_skab(
    path: Path, rows: int, *, anomalies: range = range(0), labelled: bool = True
) -> Path:
    lines = [HEADER + (";anomaly;changepoint" if labelled else "")]
    for i in range(rows):
        values = f"0.2{i:02d};0.27;2.{i % 10};0.1;89.5;28.4;228.{i};125.{i}"
        label = ";1.0" if i in anomalies else ";0.0"
        change = ";1.0" if anomalies and i == anomalies.start else ";0.0"
        lines.append(
            f"2020-03-09 10:{i // 60:02d}:{i % 60:02d};{values}"
            + (label + change if labelled else "")
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rows_become_samples_in_channel_order_with_anomaly_labels(tmp_path: Path) -> None:
    csv = write_skab(tmp_path / "valve1" / "0.csv", 10, anomalies=range(4, 7))
    samples = list(ReplaySignal(csv))

    assert [c.name for c in SKAB_CHANNELS] == [
        "vib_rms_1",
        "vib_rms_2",
        "current",
        "pressure",
        "temperature",
        "fluid_temperature",
        "voltage",
        "flow",
    ]
    assert samples[2].values == (0.202, 0.27, 2.2, 0.1, 89.5, 28.4, 228.2, 125.2)
    assert [s.label for s in samples] == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert [s.changepoint for s in samples].index(True) == 4
    assert [s.t_s for s in samples] == [float(i) for i in range(10)]


def test_speedup_compresses_time(tmp_path: Path) -> None:
    csv = write_skab(tmp_path / "a.csv", 5)
    assert [s.t_s for s in ReplaySignal(csv, speedup=10)] == [0.0, 0.1, 0.2, 0.3, 0.4]


def test_a_folder_plays_file_after_file_with_time_running_on(tmp_path: Path) -> None:
    write_skab(tmp_path / "anomaly-free" / "anomaly-free.csv", 4, labelled=False)
    write_skab(tmp_path / "other" / "12.csv", 3, anomalies=range(1, 2))
    replay = ReplaySignal(tmp_path)
    samples = list(replay)

    assert len(replay) == 7
    assert [s.t_s for s in samples] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [s.label for s in samples] == [0, 0, 0, 0, 0, 1, 0]


def test_loop_repeats_forever_with_increasing_time(tmp_path: Path) -> None:
    csv = write_skab(tmp_path / "a.csv", 3)
    it = iter(ReplaySignal(csv, loop=True))
    times = [next(it).t_s for _ in range(7)]
    assert times == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_file_without_skab_columns_is_refused_with_the_missing_names(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("datetime;Current\n2020-01-01 00:00:00;1.0\n")
    with pytest.raises(ValueError, match="Pressure"):
        read_skab_csv(bad)


def test_unparseable_row_names_file_and_line(tmp_path: Path) -> None:
    csv = write_skab(tmp_path / "a.csv", 3)
    csv.write_text(csv.read_text().replace("89.5", "hot", 1))
    with pytest.raises(ValueError, match=r"a\.csv:2"):
        read_skab_csv(csv)


def test_missing_folder_and_empty_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ReplaySignal(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"no \*\.csv"):
        ReplaySignal(tmp_path)
