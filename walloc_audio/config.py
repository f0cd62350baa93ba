"""A codec's architecture: the config stored with its weights (no torch, shared by every path)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from .wavelets import packet_filters


@dataclass(frozen=True)
class CodecConfig:
    """Everything that defines a codec's architecture (stored with its weights)."""

    channels: int = 2
    sample_rate: int = 44100
    J: int = 8
    latent_dim: int = 108
    latent_bits: int = 12
    compand_knee: float = 512.0
    decoder_width: int = 0
    decoder_depth: int = 0
    decoder_kernel: int = 3
    lookahead_frames: int = 0
    post_filter_taps: int = 0  # causal per-channel FIR on the output PCM (0 = none)
    entropy: str = "static"  # "static": per-channel tables; "context": context-adaptive Laplace

    def __post_init__(self):
        if not 1 <= self.channels <= 16:
            raise ValueError(f"channels must be 1..16, got {self.channels}")
        if not 1 <= self.J <= 12:
            raise ValueError(f"J must be 1..12, got {self.J}")
        if not 1 <= self.latent_dim <= self.channels * 2**self.J:
            raise ValueError(f"latent_dim must be 1..{self.channels * 2**self.J}, got {self.latent_dim}")
        if not 0 <= self.post_filter_taps <= 1024:
            raise ValueError(f"post_filter_taps must be 0..1024, got {self.post_filter_taps}")
        if self.entropy not in ("static", "context"):
            raise ValueError(f"entropy must be 'static' or 'context', got {self.entropy!r}")
        if not 8000 <= self.sample_rate <= 384000:
            raise ValueError(f"sample_rate out of range: {self.sample_rate}")

    @property
    def frame(self) -> int:
        return 2**self.J

    @property
    def coefficients(self) -> int:
        """``C * 2**J`` wavelet packet channels per frame."""
        return self.channels * self.frame

    @property
    def dimension_reduction(self) -> float:
        return self.coefficients / self.latent_dim

    @property
    def delay_frames(self) -> int:
        """Frames by which decoded audio trails the input (the WPT's pure delay)."""
        f = packet_filters(self.J)
        return f.analysis_delay + f.synthesis_delay

    @property
    def delay_samples(self) -> int:
        return self.delay_frames * self.frame

    @property
    def flush_frames(self) -> int:
        """Latent frames to encode past the end of the input so all of it decodes."""
        return self.delay_frames + self.lookahead_frames

    @property
    def latency_samples(self) -> int:
        """Worst-case algorithmic latency: WPT delay, decoder look-ahead, frame buffering."""
        return self.flush_frames * self.frame + self.frame - 1

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CodecConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


def frames_for(num_samples: int, config: CodecConfig) -> int:
    """Latent frames a complete stream of ``num_samples`` samples needs (flush included)."""
    return math.ceil(num_samples / config.frame) + config.flush_frames
