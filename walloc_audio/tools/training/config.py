"""The configuration of a training run (YAML + ``--set key=value``), and its portable form in the model card."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


from walloc_audio.errors import WallocError
from walloc_audio.config import CodecConfig



@dataclass
class TrainConfig:
    """One training run. Every field can be set in the YAML file or with ``--set key=value``."""

    name: str = "stereo-5x"
    description: str = ""
    # codec
    J: int = 8
    latent_dim: int = 108
    channels: int = 2
    sample_rate: int = 44100
    decoder_width: int = 128
    decoder_depth: int = 3
    decoder_kernel: int = 3
    lookahead_frames: int = 0
    step: float = 0.084  # quantizer step of the latents: sets the rate
    init: str = "pca"  # pca | random (random orthonormal encoder, zero decoder: for ablations and tests)
    entropy: str = "context"
    # data
    train: str = ""  # a file listing tracks, or a folder of audio
    val: str = ""
    stems: str = ""  # optional MUSDB-style folder (train/*/{drums,bass,other,vocals}.wav) remixed into crops
    stem_mix_probability: float = 0.5
    max_track_seconds: float = 240.0
    min_track_seconds: float = 2.0
    crop_frames: int = 64
    gain_db: list = field(default_factory=lambda: [-20.0, 0.0])
    # optimisation
    batch_size: int = 16
    lr: float = 3e-4
    encoder_lr: float = 1e-5  # 0 freezes the (PCA) encoder
    warmup_steps: int = 200  # linear learning-rate warm-up
    quantization: str = "noise"  # noise | round (straight-through)
    mrstft_weight: float = 0.0
    rate_weight: float = 0.0  # weight of the rate proxy (bits per latent) against the normalised MSE
    max_steps: int = 20000
    max_time: str = "00:02:30:00"  # DD:HH:MM:SS, Lightning's format
    val_every: int = 250
    val_seconds: float = 20.0
    seed: int = 0
    # fitting
    pca_seconds: float = 90.0
    entropy_seconds: float = 90.0
    export_val_seconds: float = 60.0

    @classmethod
    def load(cls, path: str | None, overrides: list[str] = ()) -> "TrainConfig":
        import yaml

        d: dict = {}
        if path:
            try:
                d = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise WallocError(f"cannot read training config {path}: {exc}") from None
            if not isinstance(d, dict):
                raise WallocError(f"{path}: a training config is a mapping of keys to values")
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise WallocError(f"--set expects key=value, got {item!r}")
            d[key.strip()] = yaml.safe_load(value)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise WallocError(f"unknown training config keys: {', '.join(unknown)}")
        for key in ("train", "val", "stems"):  # paths may name $VARIABLES (e.g. $WALLOC_DATA)
            if isinstance(d.get(key), str):
                d[key] = os.path.expandvars(d[key])
        cfg = cls(**d)
        if cfg.init not in ("pca", "random"):
            raise WallocError("init must be 'pca' or 'random'")
        if cfg.quantization not in ("noise", "round"):
            raise WallocError("quantization must be 'noise' or 'round'")
        if not cfg.train:
            raise WallocError("no training data: set `train:` to a track list or a folder")
        return cfg

    def codec_config(self) -> CodecConfig:
        return CodecConfig(channels=self.channels, sample_rate=self.sample_rate, J=self.J, latent_dim=self.latent_dim,
                           decoder_width=self.decoder_width if self.decoder_depth else 0,
                           decoder_depth=self.decoder_depth, decoder_kernel=self.decoder_kernel,
                           lookahead_frames=self.lookahead_frames, entropy=self.entropy)


def portable_config(cfg: TrainConfig) -> dict:
    """The config as stored with a model: data paths under ``$WALLOC_DATA`` written that way,
    others reduced to their last two components (no machine's paths in shipped files)."""
    d = asdict(cfg)
    root = os.environ.get("WALLOC_DATA", "")
    for key in ("train", "val", "stems"):
        v = d.get(key) or ""
        if root and v.startswith(root.rstrip("/") + "/"):
            d[key] = "$WALLOC_DATA/" + v[len(root.rstrip("/")) + 1 :]
        elif v:
            d[key] = "/".join(Path(v).parts[-2:])
    return d
