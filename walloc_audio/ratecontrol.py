"""Choosing each packet's quantizer step: constant quality or a target bitrate.

The decoder only reads the step exponent ``E`` of each packet
(:mod:`walloc_audio.adaptive`); how the encoder picks it is this module.

**Level.** A packet's level is the RMS of its float latents (the encoder is
orthonormal, so this is the RMS of the audio it keeps), in octaves relative to
the model's ``reference_level`` (mastered music). A peak-hold envelope with a
release of ``RELEASE_DB_PER_S`` follows it: it rises at once with a loud
packet and falls slowly after one, so the step tracks the level of a passage
(a whole quiet track, a microphone at speaking level) without chasing every
beat -- within a passage the noise stays at one level, as a mean-squared-error
coder wants. Below ``FLOOR_DB`` under the reference the step is mirrored: an
envelope ``d`` dB under the floor gets the step of ``d`` dB *above* it, so the
signal-to-step ratio falls by ``2d`` and near-silence (dither, a -90 dBFS hiss,
an idle microphone) codes to all-zero packets instead of being amplified, while
quiet music above the floor keeps its quality.

**Quality** ``Q`` (0..10, default 5): the step is ``delta * 2**(level + (5 -
Q)/2)``: each unit of ``Q`` is 3 dB less quantization noise; ``Q = 5`` on
mastered music is the step the model was trained with (the rate of version 1
at 0 dB). Constant ``Q`` means constant signal-to-noise ratio, whatever the
input level.

**Bitrate.** :class:`BitrateControl` adjusts ``Q`` packet by packet so the
stream's bytes, container framing and header included, meet ``kbps``: it keeps
an estimate of the content's complexity (bits at ``Q = 0``, with rate assumed
to grow by ``2**(KAPPA * Q)``) and pays back any surplus or deficit over the
next ``horizon`` packets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .adaptive import E_MAX, E_MIN, E_UNITS

Q_MIN, Q_MAX, Q_DEFAULT = 0.0, 10.0, 5.0
# Rate control may go past the user's quality scale: sparse or quiet music needs a finer step than
# Q = 10 to fill a high bitrate, dense music a coarser one than Q = 0 for a low one.
Q_RATE_MIN, Q_RATE_MAX = -4.0, 16.0
RELEASE_DB_PER_S = 2.0
FLOOR_DB = -60.0
# log2 of the rate ratio per unit of Q on music, read off the shipped models' rate curves (NAME.json
# v2.rate_curves: 0.22-0.25 for stereo-20x, 0.32-0.35 for stereo-5x around Q = 5); the controller corrects the rest.
KAPPA = 0.28
_DB_PER_OCTAVE = 20.0 * math.log10(2.0)
_DEEP = 20.0  # octaves under the floor where the envelope stops falling (digital silence)


def packet_level(y: np.ndarray) -> float:
    """RMS of a packet's float latents ``[L, F]`` (float64 sums)."""
    y = np.asarray(y, dtype=np.float64)
    return math.sqrt(float(np.mean(y * y))) if y.size else 0.0


@dataclass
class LevelTracker:
    """Peak-hold envelope of packet levels, in octaves relative to the reference level."""

    reference_level: float
    packet_seconds: float
    release_db_per_s: float = RELEASE_DB_PER_S
    floor_db: float = FLOOR_DB
    envelope: float = field(init=False)

    def __post_init__(self):
        self.floor = self.floor_db / _DB_PER_OCTAVE
        self.release = self.release_db_per_s / _DB_PER_OCTAVE * self.packet_seconds
        self.reset()

    def reset(self) -> None:
        self.envelope = self.floor - _DEEP

    def advance(self, rms: float) -> float:
        """Take a packet's RMS; return the level its step is set from (octaves, mirrored below the floor)."""
        level = math.log2(rms / self.reference_level) if rms > 0 else self.floor - _DEEP
        self.envelope = max(level, self.envelope - self.release, self.floor - _DEEP)
        e = self.envelope
        return e if e >= self.floor else 2.0 * self.floor - e

    def update(self, y: np.ndarray) -> float:
        return self.advance(packet_level(y))


def exponent_for(envelope: float, quality: float) -> int:
    """Step exponent ``E`` of a packet at ``envelope`` (octaves) and quality ``Q``."""
    e = round(E_UNITS * (envelope + (Q_DEFAULT - quality) / 2.0))
    return int(min(max(e, E_MIN), E_MAX))


class BitrateControl:
    """One-pass average-bitrate control over ``Q``.

    Args:
        kbps: target, container bytes included.
        packet_seconds: audio per full packet.
        framing_bytes: bytes each packet costs beside its payload.
        fixed_bytes: bytes paid once (header, end packet), paid back over the first packets.
        initial_quality: first packet's ``Q`` (from the model's rate curve).
        horizon: packets over which a surplus or deficit is paid back.
    """

    def __init__(self, kbps: float, packet_seconds: float, framing_bytes: int, fixed_bytes: int = 0,
                 initial_quality: float = Q_DEFAULT, horizon: int = 8):
        self.target_bits = kbps * 1000.0 * packet_seconds
        self.framing_bits = 8.0 * framing_bytes
        self.debt = 8.0 * fixed_bytes
        self.horizon = max(1, int(horizon))
        self.quality = float(min(max(initial_quality, Q_RATE_MIN), Q_RATE_MAX))
        self._complexity: float | None = None

    def update(self, payload_bytes: int, frames_fraction: float = 1.0) -> None:
        """Account for the packet just coded (``frames_fraction``: its share of a full packet)."""
        bits = 8.0 * payload_bytes + self.framing_bits
        self.debt += bits - self.target_bits * frames_fraction
        payload = max(8.0 * payload_bytes, 1.0) / max(frames_fraction, 1e-6)
        x = payload / 2.0 ** (KAPPA * self.quality)
        self._complexity = x if self._complexity is None else 0.7 * self._complexity + 0.3 * x
        goal = self.target_bits - self.framing_bits - self.debt / self.horizon
        goal = max(goal, 0.1 * self.target_bits)
        q = math.log2(goal / self._complexity) / KAPPA
        self.quality = float(min(max(q, Q_RATE_MIN), Q_RATE_MAX))
