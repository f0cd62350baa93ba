"""Separation models: Asteroid's encoder -> masker -> decoder split, with WaLLoC as the codec.

The masker never knows what it works on: it maps ``[B, F, K]`` feature frames to
``n_src`` estimates, exactly as in Conv-TasNet or DPRNN. Two front ends feed it:

* :class:`LatentSeparator` -- the features are WaLLoC latents (``F = L`` latent
  channels, one frame per ``2**J`` samples). The frozen codec's ``analyze`` is the
  encoder and its linear decoder the decoder; training never touches audio,
  only cached latents (:mod:`separation.data`). Because ``analyze`` is linear,
  the mixture latent is the sum of the stem latents, so the targets are exact.
* the waveform baseline -- Asteroid's own ConvTasNet (learned 1-D conv filterbank)
  with the same masker, run on each channel.

Estimates in the latent domain are ``mask * mixture`` (``output="mask"``; latents
are signed, so the mask activation defaults to linear) or the masker's output
itself (``output="map"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from asteroid.masknn.norms import GlobLN
from torch import nn

from walloc_audio.pretrained import LoadedModel


class FastGlobLN(GlobLN):
    """Asteroid's global layer norm (gLN) through PyTorch's fused ``layer_norm`` kernel.

    gLN normalises each example over (channels, time) and then applies a gain
    and bias per channel: that is ``F.layer_norm`` over all but the batch
    dimension, without its affine part. Same parameters (``gamma``, ``beta``),
    state-dict keys and output (to float rounding) as
    :class:`asteroid.masknn.norms.GlobLN`; on CPU, where asteroid's ``torch.var``
    over two dimensions takes a slow single-threaded path, forward + backward of
    one gLN on ``[8, 256, 517]`` drops from 14 ms to 2.3 ms.
    """

    def forward(self, x: torch.Tensor, EPS: float = 1e-8) -> torch.Tensor:
        return self.apply_gain_and_bias(F.layer_norm(x, x.shape[1:], eps=EPS))


def _masker_kwargs(kw: dict) -> dict:
    """Asteroid masker arguments with ``norm_type="gLN"`` (its default) mapped to :class:`FastGlobLN`."""
    kw = dict(kw)
    if kw.get("norm_type", "gLN") == "gLN":
        kw["norm_type"] = FastGlobLN
    return kw


def build_masker(kind: str, in_chan: int, n_src: int, mask_act: str, **kw) -> nn.Module:
    """An Asteroid masker: ``"tdcn"`` (Conv-TasNet's TDConvNet) or ``"dprnn"``."""
    from asteroid.masknn import DPRNN, TDConvNet

    kw = _masker_kwargs(kw)
    if kind == "tdcn":
        return TDConvNet(in_chan, n_src, mask_act=mask_act, **kw)
    if kind == "dprnn":
        return DPRNN(in_chan, n_src, mask_act=mask_act, **kw)
    raise ValueError(f"unknown masker {kind!r} (tdcn | dprnn)")


class LatentSeparator(nn.Module):
    """Latent mixture ``[B, L, K]`` -> latent estimates ``[B, S, L, K]``.

    Args:
        latent_dim: ``L``.
        n_src: number of stems ``S``.
        masker: ``"tdcn"`` or ``"dprnn"``; ``masker_kwargs`` go to it.
        output: ``"mask"`` (estimate = mask * mixture) or ``"map"``.
        scale: latents are divided by it before the masker (and multiplied back),
            so the network sees unit-scale features whatever the codec's scaling.
        consistency: project the estimates so that they add up to the mixture
            (each gets an equal share of the residual, ``est += (z - sum est) / S``;
            Wisdom et al., "Differentiable consistency constraints for improved
            deep speech enhancement", 2019). Exact in the latent domain: the
            codec's analysis is linear.
    """

    def __init__(self, latent_dim: int, n_src: int = 4, masker: str = "tdcn", output: str = "mask",
                 mask_act: str = "linear", scale: float = 1.0, consistency: bool = False, **masker_kwargs):
        super().__init__()
        assert output in ("mask", "map"), f"output must be mask | map, got {output!r}"
        self.latent_dim, self.n_src, self.output = latent_dim, n_src, output
        self.consistency = bool(consistency)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.masker = build_masker(masker, latent_dim, n_src, mask_act, **masker_kwargs)
        self.config = {"latent_dim": latent_dim, "n_src": n_src, "masker": masker, "output": output,
                       "mask_act": mask_act, "scale": float(scale), **masker_kwargs}
        if self.consistency:  # only then: files without the key are the networks of before
            self.config["consistency"] = True

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 3 and z.shape[1] == self.latent_dim, f"expected [B, {self.latent_dim}, K], got {tuple(z.shape)}"
        x = z / self.scale
        out = self.masker(x)  # [B, S, L, K]
        if self.output == "mask":
            out = out * x[:, None]
        if self.consistency:
            out = out + (x - out.sum(1)).unsqueeze(1) / self.n_src
        return out * self.scale

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class WallocFrontEnd(nn.Module):
    """The frozen codec as Asteroid-style encoder and decoder for whole-track inference.

    ``encode``: audio ``[B, C, T]`` -> latents ``[B, L, K]`` (T padded to whole frames).
    ``decode``: latent estimates ``[B, S, L, K]`` -> audio ``[B, S, C, T]``, aligned with
    the input (the transform's delay removed).
    """

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.model = model
        for p in model.codec.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        pad = (-x.shape[-1]) % cfg.frame + cfg.flush_frames * cfg.frame
        return self.model.codec.analyze(torch.nn.functional.pad(x, (0, pad)))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, length: int) -> torch.Tensor:
        b, s, l, k = z.shape
        y = self._aligned(self.model.codec.synthesize(z.reshape(b * s, l, k)), length)  # [B*S, C, length]
        return y.reshape(b, s, y.shape[1], length)

    @torch.no_grad()
    def decode_packets(self, coef: torch.Tensor, length: int) -> torch.Tensor:
        """Wavelet packet coefficients ``[B, C*P, K]`` (the decoder's output) -> audio ``[B, C, length]``, aligned."""
        return self._aligned(self.model.codec.synthesize_packets(coef), length)

    def _aligned(self, y: torch.Tensor, length: int) -> torch.Tensor:
        d = self.model.config.delay_samples
        return y[..., d : d + length]


def waveform_baseline(n_src: int = 4, sample_rate: int = 44100, **kw) -> nn.Module:
    """Asteroid's ConvTasNet (learned filterbank + the same TDConvNet masker), mono per channel."""
    from asteroid.models import ConvTasNet

    return ConvTasNet(n_src=n_src, sample_rate=sample_rate, **_masker_kwargs(kw))
