"""Small synthetic models and signals shared by the tests (no downloads, no shipped weights)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import soundfile as sf
import torch

from walloc_audio.entropy import ContextCoder, EntropyCoder, count_symbols, fit_context_model, fit_probabilities
from walloc_audio.config import CodecConfig
from walloc_audio.tools.model import WallocCodec
from walloc_audio.pretrained import LoadedModel


def tones(seconds: float = 1.0, rate: int = 44100, freqs=(220.0, 330.0), amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """Stereo test signal ``[2, T]``: one tone per channel plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = np.stack([amp * np.sin(2 * np.pi * f * t) for f in freqs]) + 0.01 * rng.standard_normal((2, t.size))
    return x.astype(np.float32)


def make_model(J: int = 4, latent_dim: int | None = None, step: float = 1e-3, depth: int = 0, width: int = 16,
               lookahead: int = 0, seed: int = 0, post_filter: int = 0, entropy: str = "static") -> LoadedModel:
    """A codec whose encoder keeps the lowest-frequency packets (an orthonormal choice)."""
    torch.manual_seed(seed)
    p = 2**J
    latent_dim = latent_dim or p  # half the coefficients of a stereo signal by default
    cfg = CodecConfig(J=J, latent_dim=latent_dim, latent_bits=12, compand_knee=64.0, decoder_width=width if depth else 0,
                      decoder_depth=depth, lookahead_frames=lookahead, post_filter_taps=post_filter,
                      entropy=entropy)
    codec = WallocCodec(cfg)
    order = np.argsort(np.tile(np.arange(p), 2), kind="stable")[:latent_dim]  # low bands of both channels first
    enc = torch.zeros(latent_dim, 2 * p)
    enc[torch.arange(latent_dim), torch.from_numpy(order)] = 1.0
    with torch.no_grad():
        codec.encoder.copy_(enc)
        codec.decoder.linear.copy_(enc.T)
        codec.bottleneck.log_step.fill_(math.log(step))
        if depth:  # make the nonlinear part do something, so chunking bugs would show
            torch.nn.init.normal_(codec.decoder.net[-1].weight, std=1e-3)
        if post_filter:  # a mild low-pass, so a state bug would show
            codec.post_filter.copy_(torch.linspace(1.0, 0.2, post_filter).expand(2, -1) / 3.0)
    codec.eval()
    x = torch.from_numpy(tones(2.0, freqs=(110.0, 440.0)))[None]
    x = x[..., : x.shape[-1] // p * p]
    with torch.no_grad():
        q = codec.encode(x)[0]
        counts = count_symbols(q, codec.bottleneck.max_symbol)
    if entropy == "context":
        coder = ContextCoder(*fit_context_model([q.numpy()], [q.numpy().astype(np.float32)], 16),
                             codec.bottleneck.max_symbol)
    else:
        coder = EntropyCoder(fit_probabilities(counts))
    sha = hashlib.sha256(f"test-{J}-{latent_dim}-{depth}-{seed}".encode()).hexdigest()
    return LoadedModel.from_codec("test-model", sha, codec, coder, {})


# -- tiny MUSDB18-HQ-style sets ---------------------------------------------------------
STEMS = ("drums", "bass", "other", "vocals")
RATE = 44100
TRACKS = {"Alpha - One": 1.5, "Beta - Two": 1.2}


def stem_signals(seconds: float, seed: int) -> dict[str, np.ndarray]:
    """Four distinct stereo stems ``[T, 2]``: a kick-like burst train, a bass tone, noise, a vocal-ish tone."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    drums = (np.exp(-30 * (t % 0.25)) * rng.standard_normal(t.size) * 0.12)[:, None] * [1.0, 0.8]
    bass = np.stack([0.3 * np.sin(2 * np.pi * 55 * (1 + seed) * t), 0.3 * np.sin(2 * np.pi * 55 * t + 0.3)], 1)
    other = 0.05 * rng.standard_normal((t.size, 2))
    vocals = 0.2 * np.sin(2 * np.pi * 440 * t + 3 * np.sin(2 * np.pi * 5 * t))[:, None] * [0.6, 1.0]
    return {k: v.astype(np.float32) for k, v in zip(STEMS, (drums, bass, other, vocals))}


def make_musdb(root, tracks=TRACKS, subset="train", silent_vocals=()):
    """Write a MUSDB18-HQ-style set; returns ``{track: {stem: [T, 2]}}`` as written (PCM_16 round trip)."""
    written = {}
    for i, (name, seconds) in enumerate(tracks.items()):
        folder = root / subset / name
        folder.mkdir(parents=True)
        stems = stem_signals(seconds, seed=i)
        if name in silent_vocals:
            stems["vocals"][:] = 0
        for stem, x in stems.items():
            sf.write(folder / f"{stem}.wav", x, RATE, subtype="PCM_16")
        sf.write(folder / "mixture.wav", np.clip(sum(stems.values()), -1, 1), RATE, subtype="PCM_16")
        written[name] = {s: sf.read(folder / f"{s}.wav", dtype="float32")[0] for s in STEMS}
    return written


