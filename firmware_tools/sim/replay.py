"""Replay recorded pump data (SKAB's CSV layout) as a simulated node's channels.

SKAB files are ``;``-separated with a header ``datetime;Accelerometer1RMS;
Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;
Volume Flow RateRMS[;anomaly;changepoint]`` at ~1 Hz. A folder is replayed file
after file (sorted by path, recursing), each file's timeline appended to the
previous one's so time never runs backwards. ``speedup`` compresses time: at
60, an hour of recording plays in a minute.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from firmware_tools.sim.signals import LabelledSample
from gateway.protocol.messages import Channel

# SKAB column -> (fleet channel name, unit). Accelerometer RMS is in g on the test rig.
SKAB_COLUMNS: dict[str, Channel] = {
    "Accelerometer1RMS": Channel("vib_rms_1", "g"),
    "Accelerometer2RMS": Channel("vib_rms_2", "g"),
    "Current": Channel("current", "A"),
    "Pressure": Channel("pressure", "bar"),
    "Temperature": Channel("temperature", "degC"),
    "Thermocouple": Channel("fluid_temperature", "degC"),
    "Voltage": Channel("voltage", "V"),
    "Volume Flow RateRMS": Channel("flow", "l/min"),
}
SKAB_CHANNELS: tuple[Channel, ...] = tuple(SKAB_COLUMNS.values())

# Label given to rows SKAB marks anomalous; the generic "anomaly" class, since
# SKAB does not say which fault a row shows beyond the file it is in.
REPLAY_ANOMALY_LABEL = 1


@dataclass(frozen=True, slots=True)
class ReplayRow:
    """One recorded row: seconds since the file's first row, values, labels."""

    t_s: float
    values: tuple[float, ...]
    anomaly: bool
    changepoint: bool


def read_skab_csv(path: Path) -> list[ReplayRow]:
    """Parse one SKAB-layout file; label columns are optional (anomaly-free files lack them)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=";")
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a SKAB header row") from None
        missing = [c for c in ("datetime", *SKAB_COLUMNS) if c not in header]
        if missing:
            msg = f"{path}: missing columns {missing}; expected SKAB's ';'-separated layout"
            raise ValueError(msg)
        col = {name: header.index(name) for name in header}
        rows: list[ReplayRow] = []
        t0: datetime | None = None
        for line_no, raw in enumerate(reader, start=2):
            if not raw or not "".join(raw).strip():
                continue
            try:
                when = datetime.fromisoformat(raw[col["datetime"]].strip())
                values = tuple(float(raw[col[name]]) for name in SKAB_COLUMNS)
                anomaly = "anomaly" in col and float(raw[col["anomaly"]]) >= 0.5
                changepoint = "changepoint" in col and float(raw[col["changepoint"]]) >= 0.5
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from exc
            t0 = t0 or when
            rows.append(ReplayRow((when - t0).total_seconds(), values, anomaly, changepoint))
    return rows


class ReplaySignal:
    """A :class:`~firmware_tools.sim.signals.SignalSource` over a SKAB file or folder.

    ``t_s`` of each sample is recording time divided by ``speedup``; gaps in the
    recording stay gaps. With ``loop``, the data repeats forever (each pass
    continues the timeline).
    """

    def __init__(self, path: Path, *, speedup: float = 1.0, loop: bool = False) -> None:
        if speedup <= 0:
            raise ValueError(f"speedup must be > 0, got {speedup}")
        self.path = Path(path)
        self.speedup = speedup
        self.loop = loop
        if self.path.is_dir():
            self.files = sorted(self.path.rglob("*.csv"))
        elif self.path.is_file():
            self.files = [self.path]
        else:
            raise FileNotFoundError(f"replay data not found: {self.path}")
        if not self.files:
            raise ValueError(f"no *.csv files under {self.path}")
        self._rows = [read_skab_csv(f) for f in self.files]

    @property
    def channels(self) -> tuple[Channel, ...]:
        return SKAB_CHANNELS

    def __len__(self) -> int:
        return sum(len(rows) for rows in self._rows)

    def __iter__(self) -> Iterator[LabelledSample]:
        offset_s = 0.0
        while True:
            for rows in self._rows:
                if not rows:
                    continue
                for row in rows:
                    yield LabelledSample(
                        t_s=(offset_s + row.t_s) / self.speedup,
                        values=row.values,
                        label=REPLAY_ANOMALY_LABEL if row.anomaly else 0,
                        changepoint=row.changepoint,
                    )
                # The next file starts one median step after this one ends.
                offset_s += rows[-1].t_s + _typical_step_s(rows)
            if not self.loop:
                return


def _typical_step_s(rows: list[ReplayRow]) -> float:
    steps = sorted(b.t_s - a.t_s for a, b in itertools.pairwise(rows))
    return steps[len(steps) // 2] if steps else 1.0
