"""Small synthetic models and signals shared by the tests (no downloads, no shipped weights)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from walloc_audio.entropy import EntropyCoder, count_symbols, fit_probabilities
from walloc_audio.model import CodecConfig, WallocCodec
from walloc_audio.pretrained import LoadedModel


def tones(seconds: float = 1.0, rate: int = 44100, freqs=(220.0, 330.0), amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """Stereo test signal ``[2, T]``: one tone per channel plus a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = np.stack([amp * np.sin(2 * np.pi * f * t) for f in freqs]) + 0.01 * rng.standard_normal((2, t.size))
    return x.astype(np.float32)


def make_model(J: int = 4, latent_dim: int | None = None, step: float = 1e-3, depth: int = 0, width: int = 16,
               lookahead: int = 0, seed: int = 0, post_filter: int = 0) -> LoadedModel:
    """A codec whose encoder keeps the lowest-frequency packets (an orthonormal choice)."""
    torch.manual_seed(seed)
    p = 2**J
    latent_dim = latent_dim or p  # half the coefficients of a stereo signal by default
    cfg = CodecConfig(J=J, latent_dim=latent_dim, latent_bits=12, compand_knee=64.0, decoder_width=width if depth else 0,
                      decoder_depth=depth, lookahead_frames=lookahead, post_filter_taps=post_filter)
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
    codec.bottleneck.invalidate()
    codec.eval()
    x = torch.from_numpy(tones(2.0, freqs=(110.0, 440.0)))[None]
    x = x[..., : x.shape[-1] // p * p]
    with torch.no_grad():
        counts = count_symbols(codec.encode(x)[0], codec.bottleneck.max_symbol)
    coder = EntropyCoder(fit_probabilities(counts))
    sha = hashlib.sha256(f"test-{J}-{latent_dim}-{depth}-{seed}".encode()).hexdigest()
    return LoadedModel("test-model", sha, codec, coder, {})
