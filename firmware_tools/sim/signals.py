"""Synthetic sensor signals modelled on a centrifugal pump, with labelled faults.

Everything here is deterministic for a given seed: the same :class:`PumpSignal`
configuration yields the same samples bit for bit, so a test or a benchmark can
replay a scenario and score alerts against the ground truth each sample carries.

The physics is deliberately simple but points the right way: closing the
discharge valve moves the pump along its curve (flow falls, pressure climbs
towards shut-off head, current falls because hydraulic power falls, the fluid
heats up); cavitation knocks flow down and makes pressure and vibration rough;
bearing defects add tones at the bearing's characteristic frequencies.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gateway.protocol.messages import Channel


class FaultKind(enum.IntEnum):
    """Ground-truth label of a sample; 0 is normal operation."""

    NORMAL = 0
    CAVITATION = 1
    VALVE_CLOSED = 2
    BEARING_OUTER = 3  # outer-race defect: tones at BPFO
    BEARING_INNER = 4  # inner-race defect: BPFI, amplitude-modulated at shaft speed
    IMBALANCE = 5
    OVERHEATING = 6
    SENSOR_STUCK = 7
    SPIKES = 8
    LEAK = 9

    @classmethod
    def parse(cls, text: str) -> FaultKind:
        """Accept ``valve_closed``, ``valve-closed``, ``VALVE_CLOSED``; ``bearing`` = outer race."""
        name = text.strip().upper().replace("-", "_")
        if name in ("BEARING", "BEARING_FAULT"):
            return cls.BEARING_OUTER
        try:
            return cls[name]
        except KeyError:
            choices = ", ".join(k.name.lower() for k in cls if k is not cls.NORMAL)
            msg = f"unknown fault kind {text!r}; choose one of: {choices}"
            raise ValueError(msg) from None


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: active on ``[start_s, start_s + duration_s)``.

    ``severity`` scales the effect (1.0 is a clear, textbook case). ``channel``
    picks the victim of sensor faults (``sensor_stuck``, ``spikes``); other kinds
    ignore it.
    """

    kind: FaultKind
    start_s: float
    duration_s: float
    severity: float = 1.0
    channel: str | None = None

    def __post_init__(self) -> None:
        if self.kind is FaultKind.NORMAL:
            raise ValueError("a fault needs a kind other than NORMAL")
        if self.duration_s <= 0 or self.start_s < 0:
            raise ValueError(f"fault window must be start_s >= 0, duration_s > 0: {self}")
        if not 0 < self.severity <= 5:
            raise ValueError(f"fault severity must be in (0, 5]: {self.severity}")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    def strength(self, t_s: float) -> float:
        """0 outside the window; inside, severity reached over a short onset ramp.

        Real faults develop (a valve takes seconds to close, a pump seconds to
        start cavitating); the label still covers the whole window, as SKAB's do.
        """
        if not self.active(t_s):
            return 0.0
        ramp_s = min(self.duration_s * 0.2, 20.0)
        return self.severity * min(1.0, (t_s - self.start_s) / ramp_s) if ramp_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LabelledSample:
    """One multi-channel sample with its ground truth.

    ``label`` is the :class:`FaultKind` value of the first active fault (0 if
    none); ``faults`` lists every fault active at ``t_s``; ``changepoint`` marks
    the first sample of a fault (SKAB's changepoint column).
    """

    t_s: float
    values: tuple[float, ...]
    label: int = 0
    faults: tuple[FaultKind, ...] = ()
    changepoint: bool = False


class SignalSource(Protocol):
    """What a simulated node samples: named channels and a stream of labelled samples."""

    @property
    def channels(self) -> tuple[Channel, ...]: ...

    def __iter__(self) -> Iterator[LabelledSample]: ...


# -- bearing and vibration ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    """Rolling-element bearing geometry; defaults are a 6205 deep-groove ball bearing."""

    n_balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0

    def _ratio(self) -> float:
        return (
            self.ball_diameter_mm
            / self.pitch_diameter_mm
            * math.cos(math.radians(self.contact_angle_deg))
        )

    def bpfo(self, shaft_hz: float) -> float:
        """Ball-pass frequency, outer race (~3.58 x shaft for a 6205)."""
        return self.n_balls / 2 * shaft_hz * (1 - self._ratio())

    def bpfi(self, shaft_hz: float) -> float:
        """Ball-pass frequency, inner race (~5.42 x shaft for a 6205)."""
        return self.n_balls / 2 * shaft_hz * (1 + self._ratio())

    def ftf(self, shaft_hz: float) -> float:
        """Fundamental train (cage) frequency."""
        return shaft_hz / 2 * (1 - self._ratio())


@dataclass(frozen=True, slots=True)
class VibrationModel:
    """Accelerometer on a pump bearing housing, in m/s².

    Shaft harmonics (1x, 2x, 3x) and vane pass, plus fault components: imbalance
    raises 1x, bearing defects add their ball-pass tones and a decaying
    structural resonance struck once per ball pass (what envelope analysis finds),
    cavitation adds broadband noise.
    """

    shaft_hz: float = 24.6  # 4-pole motor on 50 Hz at ~1475 rpm
    vanes: int = 5
    bearing: BearingGeometry = field(default_factory=BearingGeometry)
    # Magnitudes match tinymodels.pump_signals, which the shipped node model learnt from.
    harmonics_ms2: tuple[float, ...] = (0.8, 0.3, 0.1)
    vane_pass_ms2: float = 0.25
    noise_ms2: float = 0.08
    resonance_hz: float = 3200.0

    def _tones(self, faults: Sequence[tuple[FaultKind, float]]) -> list[tuple[float, float]]:
        """(frequency Hz, amplitude m/s²) of every steady tone present."""
        fr = self.shaft_hz
        tones = [(fr * (i + 1), a) for i, a in enumerate(self.harmonics_ms2)]
        tones.append((fr * self.vanes, self.vane_pass_ms2))
        for kind, s in faults:
            if kind is FaultKind.IMBALANCE:
                tones[0] = (tones[0][0], tones[0][1] * (1 + 2.0 * s))
            elif kind is FaultKind.BEARING_OUTER:
                f = self.bearing.bpfo(fr)
                tones += [(f, 0.6 * s), (2 * f, 0.3 * s), (3 * f, 0.15 * s)]
            elif kind is FaultKind.BEARING_INNER:
                f = self.bearing.bpfi(fr)
                # Shaft-rate modulation shows up as sidebands at f ± fr.
                tones += [(f, 0.5 * s), (f - fr, 0.2 * s), (f + fr, 0.2 * s), (2 * f, 0.15 * s)]
        return tones

    def _noise(self, faults: Sequence[tuple[FaultKind, float]]) -> float:
        gain = 1.0 + sum(8.0 * s for k, s in faults if k is FaultKind.CAVITATION)
        return self.noise_ms2 * gain

    def expected_rms(self, faults: Sequence[tuple[FaultKind, float]] = ()) -> float:
        """Overall RMS of :meth:`window` for the given (kind, strength) faults."""
        power = sum(a * a / 2 for _, a in self._tones(faults)) + self._noise(faults) ** 2
        impacts = sum(s for k, s in faults if k in _BEARING_KINDS)
        # A train of decaying impacts adds roughly its own mean power.
        power += (0.4 * impacts) ** 2 / 4
        return math.sqrt(power)

    def window(
        self,
        n: int,
        sample_rate_hz: float,
        *,
        start_s: float = 0.0,
        faults: Sequence[tuple[FaultKind, float]] = (),
        seed: int = 0,
    ) -> np.ndarray:
        """``n`` samples of the raw waveform starting at ``start_s``; same inputs, same output."""
        t = start_s + np.arange(n) / sample_rate_hz
        nyquist = sample_rate_hz / 2
        x = np.zeros(n)
        for f, a in self._tones(faults):
            if f < nyquist:
                x += a * np.sin(2 * np.pi * f * t)
        for kind, s in faults:
            if kind not in _BEARING_KINDS or s <= 0:
                continue
            # A node sampling at ~1 kHz sees the impacts ring a lower structural mode.
            resonance_hz = (
                self.resonance_hz if self.resonance_hz < nyquist else 0.3 * sample_rate_hz
            )
            fault_hz = (
                self.bearing.bpfo(self.shaft_hz)
                if kind is FaultKind.BEARING_OUTER
                else self.bearing.bpfi(self.shaft_hz)
            )
            since_impact = np.mod(t, 1.0 / fault_hz)
            ring = np.exp(-since_impact * 800.0) * np.sin(2 * np.pi * resonance_hz * t)
            if kind is FaultKind.BEARING_INNER:
                ring *= 0.6 + 0.4 * np.cos(2 * np.pi * self.shaft_hz * t)
            x += 0.8 * s * ring
        rng = np.random.default_rng([seed, round(start_s * sample_rate_hz)])
        x += rng.normal(0.0, self._noise(faults), n)
        return x


_BEARING_KINDS = frozenset({FaultKind.BEARING_OUTER, FaultKind.BEARING_INNER})


# -- the pump ------------------------------------------------------------------------------

PUMP_CHANNELS: tuple[Channel, ...] = (
    Channel("current", "A"),
    Channel("pressure", "bar"),
    Channel("flow", "l/min"),
    Channel("temperature", "degC"),
    Channel("vib_rms", "m/s2"),
)


@dataclass(frozen=True, slots=True)
class PumpParams:
    """Operating point of a small close-coupled centrifugal pump (SKAB-like sizes)."""

    rated_flow_lpm: float = 125.0
    rated_pressure_bar: float = 1.0
    shutoff_pressure_bar: float = 1.45
    rated_current_a: float = 2.2
    no_flow_current_a: float = 1.4
    ambient_degc: float = 21.0
    ambient_swing_degc: float = 5.0
    motor_rise_degc: float = 38.0  # casing temperature rise over ambient at rated load
    thermal_tau_s: float = 240.0
    cycle_s: float = 86_400.0  # ambient and demand cycle; shrink it to see days in minutes
    demand_swing: float = 0.06
    noise: tuple[float, ...] = (0.03, 0.01, 0.9, 0.06, 0.02)  # per PUMP_CHANNELS


class PumpSignal:
    """An endless, seeded stream of pump readings at ``rate_hz`` with injected faults.

    Iterate it (each iteration restarts from t = 0 with the same seed, so two
    iterations are identical) or call :meth:`take`.
    """

    def __init__(
        self,
        *,
        rate_hz: float = 1.0,
        seed: int = 0,
        faults: Sequence[Fault] = (),
        params: PumpParams | None = None,
        vibration: VibrationModel | None = None,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.rate_hz = rate_hz
        self.seed = seed
        self.faults = tuple(sorted(faults, key=lambda f: f.start_s))
        self.params = params or PumpParams()
        self.vibration = vibration or VibrationModel()
        names = {c.name for c in PUMP_CHANNELS}
        for fault in self.faults:
            if fault.channel is not None and fault.channel not in names:
                msg = f"fault channel {fault.channel!r} is not one of {sorted(names)}"
                raise ValueError(msg)

    @property
    def channels(self) -> tuple[Channel, ...]:
        return PUMP_CHANNELS

    def take(self, n: int) -> list[LabelledSample]:
        it = iter(self)
        return [next(it) for _ in range(n)]

    def __iter__(self) -> Iterator[LabelledSample]:
        p = self.params
        rng = np.random.default_rng(self.seed)
        dt = 1.0 / self.rate_hz
        # Slow, mean-reverting drift in demand (Ornstein-Uhlenbeck, ~10 min memory).
        drift, drift_tau_s, drift_sigma = 0.0, 600.0, 0.015
        idx = {c.name: i for i, c in enumerate(PUMP_CHANNELS)}
        # Start in thermal equilibrium so t = 0 is not a cool-down transient.
        temp = p.ambient_degc - p.ambient_swing_degc + p.motor_rise_degc
        fluid_heat = 0.0
        held: dict[int, float] = {}  # fault index -> stuck value
        prev: list[float] = []
        i = 0
        while True:
            t = i * dt
            active = [(j, f, f.strength(t)) for j, f in enumerate(self.faults) if f.active(t)]
            strengths: dict[FaultKind, float] = {}
            for _, f, s in active:
                strengths[f.kind] = max(strengths.get(f.kind, 0.0), s)

            drift += -drift / drift_tau_s * dt + drift_sigma * math.sqrt(
                2 * dt / drift_tau_s
            ) * float(rng.normal())
            phase = 2 * math.pi * t / p.cycle_s
            demand = 1.0 + p.demand_swing * math.sin(phase) + drift
            ambient = p.ambient_degc - p.ambient_swing_degc * math.cos(phase)

            valve = min(strengths.get(FaultKind.VALVE_CLOSED, 0.0), 1.0)
            cav = strengths.get(FaultKind.CAVITATION, 0.0)
            leak = strengths.get(FaultKind.LEAK, 0.0)
            q_rel = max(0.0, demand * (1 - 0.97 * valve) * (1 - 0.3 * cav) * (1 + 0.15 * leak))
            flow = p.rated_flow_lpm * q_rel
            # Pump curve H = H0 - k·Q²: less flow, more head, up to shut-off.
            pressure = p.shutoff_pressure_bar - (p.shutoff_pressure_bar - p.rated_pressure_bar) * (
                q_rel**2
            )
            pressure *= 1 - 0.35 * leak - 0.25 * cav
            current = p.no_flow_current_a + (p.rated_current_a - p.no_flow_current_a) * q_rel**0.8
            current *= 1 + 0.06 * strengths.get(FaultKind.OVERHEATING, 0.0)

            # Casing temperature: first-order lag towards ambient + I²-proportional rise;
            # a pump near shut-off churns its fluid and heats it.
            fluid_heat += (valve * 25.0 - fluid_heat) * dt / (p.thermal_tau_s * 2)
            target = (
                ambient
                + p.motor_rise_degc * (current / p.rated_current_a) ** 2
                + fluid_heat
                + 35.0 * strengths.get(FaultKind.OVERHEATING, 0.0)
                + 4.0 * sum(strengths.get(k, 0.0) for k in _BEARING_KINDS)
            )
            temp += (target - temp) * min(1.0, dt / p.thermal_tau_s)

            vib_faults = list(strengths.items())
            vib = self.vibration.expected_rms(vib_faults) * (0.85 + 0.15 * q_rel)

            clean = [current, pressure, flow, temp, vib]
            noise_gain = [1.0 + 2.0 * cav, 1.0 + 6.0 * cav, 1.0 + 4.0 * cav, 1.0, 1.0 + 2.0 * cav]
            values = [
                v + float(rng.normal(0.0, sd * g))
                for v, sd, g in zip(clean, p.noise, noise_gain, strict=True)
            ]
            values[idx["flow"]] = max(0.0, values[idx["flow"]])

            # Sensor faults act on the measurement, not the process.
            for j, f, s in active:
                ch = idx[f.channel] if f.channel else None
                if f.kind is FaultKind.SENSOR_STUCK:
                    ch = idx["pressure"] if ch is None else ch
                    held.setdefault(j, prev[ch] if prev else values[ch])
                    values[ch] = held[j]
                elif f.kind is FaultKind.SPIKES:
                    ch = idx["current"] if ch is None else ch
                    if rng.random() < min(0.5, 0.05 * s + 0.02):
                        span = abs(clean[ch]) * 0.5 + 10 * p.noise[ch]
                        values[ch] += float(rng.choice((-1.0, 1.0))) * span * (0.5 + 0.5 * s)
            for j in [j for j in held if not self.faults[j].active(t)]:
                del held[j]

            kinds = tuple(f.kind for _, f, _ in active)
            yield LabelledSample(
                t_s=t,
                values=tuple(values),
                label=int(kinds[0]) if kinds else 0,
                faults=kinds,
                changepoint=any(f.start_s <= t < f.start_s + dt for _, f, _ in active),
            )
            prev = values
            i += 1


def parse_fault_spec(spec: str) -> tuple[str | None, Fault]:
    """Parse ``"node:kind:start_s:duration_s[:severity[:channel]]"``.

    ``node`` may be ``*`` (every node); it is returned as ``None`` then.
    """
    parts = spec.split(":")
    if not 4 <= len(parts) <= 6:
        msg = (
            f"fault {spec!r}: expected node:kind:start_s:duration_s[:severity[:channel]], "
            "e.g. pump-01:cavitation:30:20"
        )
        raise ValueError(msg)
    node, kind, start, duration = parts[:4]
    try:
        fault = Fault(
            kind=FaultKind.parse(kind),
            start_s=float(start),
            duration_s=float(duration),
            severity=float(parts[4]) if len(parts) > 4 and parts[4] else 1.0,
            channel=parts[5] if len(parts) > 5 and parts[5] else None,
        )
    except ValueError as exc:
        raise ValueError(f"fault {spec!r}: {exc}") from exc
    return (None if node in ("*", "") else node), fault
