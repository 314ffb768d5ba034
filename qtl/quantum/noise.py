"""Noise, described once: `NoiseConfig` and where its channels go in a circuit (torch-free).

`gates(config)` stays the one description of the circuit; `noisy_ops(config, noise)` is that gate list
with noise channels inserted, and every noisy simulator (the native density-matrix engine, PennyLane's
`default.mixed`) replays it. The insertion rule:

    after every one-qubit gate, on its wire:   DepolarizingChannel(depolarizing),
                                               AmplitudeDamping(amplitude_damping),
                                               PhaseDamping(phase_damping)
    after every two-qubit gate (CNOT), on each of its two wires, in wire order:
                                               the same three with the *_2q strengths
    at measurement: each measured bit flips with probability `readout`
    <Z_i>: exact (shots=None) or the mean of `shots` measurement shots drawn with a seeded generator

A channel whose strength is 0 is left out. All channels are single-qubit and local, so a CNOT's noise
is two independent channels, one per wire (documented in docs/noise.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from qtl.quantum.circuit import CircuitConfig, Gate, gates

CHANNELS = ("DepolarizingChannel", "AmplitudeDamping", "PhaseDamping")
"""The channels, by PennyLane operation name, in the order they follow a gate."""

MAX_SHOTS = 10_000_000


NO_NOISY_REUPLOAD = (
    "noise simulation (the density-matrix engine) does not take data re-uploading: train with noise or "
    "with --reupload, not both"
)
"""Why a noisy re-uploading circuit is refused (the density-matrix engine shares its blocks across a batch,
where re-uploading gives each sample its own)."""


@dataclass(frozen=True)
class NoiseConfig:
    """Noise on a simulated circuit: per-gate channels, readout error and finite shots. Default: ideal."""

    depolarizing: float = 0.0  # p of a depolarizing channel after every one-qubit gate
    amplitude_damping: float = 0.0  # gamma of amplitude damping (T1-like decay) after every one-qubit gate
    phase_damping: float = 0.0  # gamma of phase damping (T2-like dephasing) after every one-qubit gate
    depolarizing_2q: float = 0.0  # the same three after every CNOT, on each of its wires
    amplitude_damping_2q: float = 0.0
    phase_damping_2q: float = 0.0
    readout: float = 0.0  # probability that a measured bit flips (symmetric readout error)
    shots: int | None = None  # None: exact <Z_i>; N: the mean of N shots, as a device would report it
    seed: int = 0  # seeds the shot sampler, so a noisy evaluation is reproducible

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name in ("shots", "seed"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"noise {f.name} must be a number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"noise {f.name} must be a probability in [0, 1], got {value}")
            object.__setattr__(self, f.name, float(value))
        if self.shots is not None and (
            isinstance(self.shots, bool)
            or not isinstance(self.shots, int)
            or not 1 <= self.shots <= MAX_SHOTS
        ):
            raise ValueError(f"shots must be None (exact) or an int in 1..{MAX_SHOTS}, got {self.shots!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"noise seed must be an int, got {self.seed!r}")

    def one_qubit(self) -> tuple[float, float, float]:
        """(depolarizing, amplitude damping, phase damping) after a one-qubit gate."""
        return self.depolarizing, self.amplitude_damping, self.phase_damping

    def two_qubit(self) -> tuple[float, float, float]:
        """(depolarizing, amplitude damping, phase damping) on each wire after a CNOT."""
        return self.depolarizing_2q, self.amplitude_damping_2q, self.phase_damping_2q

    @property
    def has_channels(self) -> bool:
        """True when some gate is followed by a channel (the state becomes mixed)."""
        return any(self.one_qubit()) or any(self.two_qubit())

    @property
    def is_ideal(self) -> bool:
        """True for a noiseless, exact simulation: no channels, no readout error, no shots."""
        return not self.has_channels and self.readout == 0 and self.shots is None

    def label(self) -> str:
        """A short description for tables and names, e.g. "dep 0.01/0.02, readout 0.02, 1000 shots"."""
        if self.is_ideal:
            return "ideal"
        parts = []
        for short, one, two in (
            ("dep", self.depolarizing, self.depolarizing_2q),
            ("amp", self.amplitude_damping, self.amplitude_damping_2q),
            ("phase", self.phase_damping, self.phase_damping_2q),
        ):
            if one or two:
                parts.append(f"{short} {one:g}" if one == two else f"{short} {one:g}/{two:g}")
        if self.readout:
            parts.append(f"readout {self.readout:g}")
        if self.shots is not None:
            parts.append(f"{self.shots} shots")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> NoiseConfig:
        """From `to_dict()` output; None or {} is the ideal config."""
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown noise config keys: {sorted(unknown)}")
        return cls(**d)


def depolarizing(p: float, shots: int | None = None, **other) -> NoiseConfig:
    """The study's one-knob noise: depolarizing strength p after every gate (one- and two-qubit alike)."""
    return NoiseConfig(depolarizing=p, depolarizing_2q=p, shots=shots, **other)


@dataclass(frozen=True)
class Channel:
    """A single-qubit noise channel: a PennyLane channel name (one of CHANNELS), its wire and strength."""

    name: str
    wire: int
    p: float


def noisy_ops(config: CircuitConfig, noise: NoiseConfig) -> list[Gate | Channel]:
    """`gates(config)` with `noise`'s channels inserted after each gate (readout and shots excluded)."""
    out: list[Gate | Channel] = []
    for gate in gates(config):
        out.append(gate)
        strengths = noise.one_qubit() if len(gate.wires) == 1 else noise.two_qubit()
        for wire in gate.wires:
            out += [Channel(name, wire, p) for name, p in zip(CHANNELS, strengths, strict=True) if p > 0]
    return out
