"""Fit the linear WaLLoC codec: PCA of wavelet packet coefficients of real music.

For a linear transform coder the MSE-optimal encoder of ``L`` dimensions is the
top-``L`` principal components of the coefficient vectors (one vector of
``C * 2**J`` coefficients per frame, channels and subbands together, so the
components capture the inter-channel redundancy of stereo too); the decoder is
their transpose. With an orthonormal basis, the same quantizer step for every
component is optimal at high rate (reverse water-filling), so one step
``delta`` sets the rate. The entropy model is then fitted on the symbols of
the same training data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from walloc_audio.audio import AudioReader
from walloc_audio.entropy import EntropyCoder, count_symbols
from walloc_audio.errors import AudioError
from walloc_audio.metrics import paper_psnr  # noqa: F401  (re-exported)
from walloc_audio.config import CodecConfig
from walloc_audio.tools.model import WallocCodec
from walloc_audio.wavelets import PacketTransform, subband_centres_hz


def iter_clips(paths: Iterable[str], sample_rate: int, channels: int, max_seconds: float | None = None,
               on_skip: Callable[[str, str], None] | None = None) -> Iterable[tuple[str, np.ndarray]]:
    """Yield ``(path, [C, T] float32)`` for each readable file with ``channels`` channels."""
    for path in paths:
        try:
            with AudioReader(path, sample_rate=sample_rate) as r:
                if r.channels != channels:
                    if on_skip:
                        on_skip(path, f"{r.channels} channels")
                    continue
                blocks, n = [], 0
                limit = None if max_seconds is None else int(max_seconds * sample_rate)
                for b in r:
                    blocks.append(b)
                    n += b.shape[1]
                    if limit is not None and n >= limit:
                        break
            x = np.concatenate(blocks, axis=1)[:, :limit]
        except AudioError as exc:
            if on_skip:
                on_skip(path, str(exc))
            continue
        yield path, x


def _trim_to_frames(x: np.ndarray, frame: int) -> torch.Tensor:
    n = x.shape[1] // frame * frame
    return torch.from_numpy(np.ascontiguousarray(x[:, :n]))[None]


def coefficient_covariance(clips: Iterable[tuple[str, np.ndarray]], J: int, channels: int) -> tuple[np.ndarray, int]:
    """Second-moment matrix ``[C*P, C*P]`` of packet coefficient frames, and the frame count."""
    d = channels * 2**J
    cov = torch.zeros(d, d, dtype=torch.float64)
    frames = 0
    for _, x in clips:
        wpt = PacketTransform(J)
        c = wpt.analysis(_trim_to_frames(x, 2**J))[0].to(torch.float64)  # [D, K]
        cov += c @ c.T
        frames += c.shape[1]
    return (cov / max(frames, 1)).numpy(), frames


def emphasis_weights(config: CodecConfig, emphasis: float, corner_hz: float = 1000.0) -> np.ndarray:
    """Amplitude weight of every coefficient ``[C * 2**J]`` (channel-major, frequency order):
    ``max(1, f / corner_hz) ** emphasis`` at each subband's centre frequency ``f``; 0: all ones."""
    w = np.maximum(1.0, subband_centres_hz(config.J, config.sample_rate) / corner_hz) ** float(emphasis)
    return np.tile(w, config.channels)


def linear_codec(config: CodecConfig, covariance: np.ndarray, step: float,
                 weights: np.ndarray | None = None) -> WallocCodec:
    """Codec whose encoder is the top principal components and decoder their transpose.

    With ``weights`` (per coefficient, e.g. :func:`emphasis_weights`), the components are those
    of the weighted coefficients ``W c``: the encoder is ``U^T W`` and the decoder ``W^-1 U``, so
    the latents stay linear in the audio but the kept subspace (and the quantization noise) is
    chosen in the weighted domain -- more latents for the bands the weights lift.
    """
    w = np.ones(covariance.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    evals, evecs = np.linalg.eigh(covariance * w[:, None] * w[None, :])
    order = np.argsort(evals)[::-1][: config.latent_dim]
    basis = evecs[:, order].T  # [L, D]
    # Sign convention: make the largest entry of each component positive (stable across runs).
    signs = np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])
    basis *= signs[:, None]
    encoder = (basis * w[None, :]).astype(np.float32)
    decoder = (basis.T / w[:, None]).astype(np.float32)
    codec = WallocCodec(config)
    with torch.no_grad():
        codec.encoder.copy_(torch.from_numpy(encoder))
        codec.decoder.linear.copy_(torch.from_numpy(decoder))
        codec.bottleneck.log_step.fill_(math.log(step))
    codec.eval()
    return codec


def saturation_margin(codec: WallocCodec) -> float:
    """How far full-scale audio can push the latents, as a fraction of the quantizer's range.

    For ``|x| <= 1`` every latent obeys ``|y_l| <= sum |taps_l|`` (the L1 norm of
    its fused analysis filter), an exact bound; the quantizer saturates at
    ``delta * expand(A)``. A value below 1 means no input can saturate.
    """
    with torch.no_grad():
        bound = codec.analysis_taps().abs().sum(dim=(0, 1))  # [L]
        bn = codec.bottleneck
        top = bn.expand(torch.tensor(float(bn.max_symbol))) * bn.step()
    return float((bound / top).max())


def symbol_counts(codec: WallocCodec, clips: Iterable[tuple[str, np.ndarray]]) -> np.ndarray:
    counts = None
    for _, x in clips:
        with torch.no_grad():
            q = codec.encode(_trim_to_frames(x, codec.config.frame))
        c = count_symbols(q[0], codec.bottleneck.max_symbol)
        counts = c if counts is None else counts + c
    assert counts is not None, "no training audio"
    return counts


def evaluate(codec: WallocCodec, coder: EntropyCoder, clips: Iterable[tuple[str, np.ndarray]]) -> dict:
    """Rate (ideal code length) and distortion on whole clips, offline path."""
    bits = frames = 0.0
    se = energy = 0.0
    psnr = []
    cfg = codec.config
    d = cfg.delay_samples
    for _, x in clips:
        xt = _trim_to_frames(x, cfg.frame)
        pad = torch.nn.functional.pad(xt, (0, cfg.flush_frames * cfg.frame))
        with torch.no_grad():
            q = codec.encode(pad)
            y = codec.decode(q)[..., d : d + xt.shape[-1]]
        bits += coder.bits(q[0].numpy())
        frames += xt.shape[-1] / cfg.frame
        err = (y - xt).double()
        se += float(err.pow(2).sum())
        energy += float(xt.double().pow(2).sum())
        psnr.append(paper_psnr(xt[0].double().numpy(), y[0].double().numpy()))
    seconds = frames * cfg.frame / cfg.sample_rate
    return {
        "kbps": bits / seconds / 1000,
        "bits_per_latent": bits / (frames * cfg.latent_dim),
        "snr_db": 10 * math.log10(energy / max(se, 1e-20)),
        "psnr_paper_db": float(np.mean(psnr)),
        "seconds": seconds,
    }


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
