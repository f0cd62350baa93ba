"""The latent separator's forward pass in numpy: ``walloc-audio separate`` without torch.

Training builds :class:`separation.models.LatentSeparator` (torch, an Asteroid
TDConvNet masker). A shipped separator is only ever *run*, on one stream of
latents at a time, and the network is a stack of 1x1 convolutions (matrix
products), depthwise dilated convolutions (a few shifted multiply-adds), PReLUs
and global layer norms: all of it is plain numpy. Running it here keeps
``separate`` on the lean install, as fast as ``encode`` to start (no torch, no
asteroid to import: ~3.5 s of a 3-minute file's 9.4 s before) and within the
codec's memory.

:class:`TDCNSeparator` reads the torch model's state dict (the separator file's
tensors, names unchanged) and checks every name and shape against the network
its metadata describes before it runs anything. Its output equals the torch
model's to float32 rounding (tested against asteroid's own TDConvNet).
"""

from __future__ import annotations

import numpy as np

GLN_EPS = 1e-8  # separation.models.FastGlobLN's (and asteroid's) epsilon
MAX_DILATION_LOG2 = 20  # blocks per repeat at most 21: a dilation of 2**20 frames is ~100 min at J = 8


class UnsupportedNetwork(ValueError):
    """The metadata describes a network this module does not run (the torch model runs it instead)."""


def _gln_affine(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global layer norm of one example ``[C, T]`` as a per-channel affine map: ``gln(x) = a[:, None] * x + b[:, None]``.

    The statistics are over all of ``x`` (one sum, one dot product); returning
    the map instead of applying it lets a following linear layer absorb it.
    """
    n = x.size
    flat = x.reshape(-1)
    mean = float(flat.sum(dtype=np.float64)) / n
    var = max(float(np.dot(flat, flat)) / n - mean * mean, 0.0)
    a = gamma / np.float32(np.sqrt(var + GLN_EPS))
    return a, beta - np.float32(mean) * a


def _prelu_(x: np.ndarray, slope: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """PReLU with one shared slope, in place (``tmp``: scratch of ``x``'s shape): ``x + (slope - 1) * min(x, 0)``."""
    np.minimum(x, 0, out=tmp)
    tmp *= slope.reshape(()) - 1
    x += tmp
    return x


def _pointwise(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 1x1 convolution ``[C_in, T] -> [C_out, T]`` (``w``: ``[C_out, C_in]``)."""
    y = w @ x
    y += b[:, None]
    return y


def _folded(w: np.ndarray, b: np.ndarray, a: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 1x1 convolution ``(w, b)`` applied after the affine map ``a * x + c``, as one convolution."""
    return w * a[None, :], w @ c + b


def _depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray, dilation: int, padding: int) -> np.ndarray:
    """One dilated filter per channel, zero-padded as torch's ``Conv1d(groups=C)``: ``[C, T] -> [C, T]``."""
    c, t = x.shape
    k = w.shape[-1]
    xp = np.zeros((c, t + 2 * padding), x.dtype)
    xp[:, padding : padding + t] = x
    y = np.empty_like(x)
    y[:] = b[:, None]
    for i in range(k):
        y += w[:, 0, i, None] * xp[:, i * dilation : i * dilation + t]
    return y


_ACTIVATIONS = {
    "linear": lambda s: s,
    "relu": lambda s: np.maximum(s, 0),
    "sigmoid": lambda s: 1 / (1 + np.exp(-s)),
    "tanh": np.tanh,
    "softmax": lambda s: (lambda e: e / e.sum(axis=0, keepdims=True))(np.exp(s - s.max(axis=0, keepdims=True))),
}


class TDCNSeparator:
    """A latent TDConvNet separator: ``z [L, K] -> [S, L, K]`` latent estimates, for ``output`` ``mask`` or ``map``.

    Args:
        config: the separator file's ``net`` metadata (what built the torch model).
        state: its tensors as numpy arrays, by the torch state-dict names.

    Raises :class:`UnsupportedNetwork` for a masker other than a non-causal
    TDConvNet with gLN, and ``ValueError`` naming the first tensor that is
    missing, extra or of the wrong shape.
    """

    def __init__(self, config: dict, state: dict):
        cfg = dict(config)
        if cfg.get("masker", "tdcn") != "tdcn":
            raise UnsupportedNetwork(f"masker {cfg.get('masker')!r}")
        if cfg.get("causal", False) or cfg.get("norm_type", "gLN") != "gLN":
            raise UnsupportedNetwork("a causal or non-gLN TDConvNet")
        self.act = _ACTIVATIONS.get(cfg.get("mask_act", "linear"))
        if self.act is None:
            raise UnsupportedNetwork(f"mask activation {cfg.get('mask_act')!r}")
        self.output = cfg.get("output", "mask")
        if self.output not in ("mask", "map"):
            raise ValueError(f"output must be mask | map, got {self.output!r}")
        consistency = cfg.get("consistency", False)
        if not isinstance(consistency, bool):
            raise ValueError(f"consistency must be true or false, got {consistency!r}")
        self.consistency = consistency
        L, S = int(cfg["latent_dim"]), int(cfg["n_src"])
        nb, nr = int(cfg.get("n_blocks", 8)), int(cfg.get("n_repeats", 3))
        bn, hid = int(cfg.get("bn_chan", 128)), int(cfg.get("hid_chan", 512))
        skip, k = int(cfg.get("skip_chan", 128) or 0), int(cfg.get("conv_kernel_size", 3))
        if k % 2 == 0:
            raise UnsupportedNetwork(f"an even kernel size ({k})")
        # Sizes come from a file: bound them before they drive a loop or an allocation (12 tensors
        # per block must be in the file; dilations past 2**MAX_DILATION_LOG2 frames mean nothing).
        if not (1 <= nb <= MAX_DILATION_LOG2 + 1 and nr >= 1 and 12 * nb * nr <= len(state) and 1 <= k <= 63
                and min(L, S, bn, hid) >= 1):
            raise ValueError(f"implausible network sizes {cfg}")
        self.latent_dim, self.n_src, self.skip = L, S, skip
        expected = {"scale": (), "masker.bottleneck.0.gamma": (L,), "masker.bottleneck.0.beta": (L,),
                    "masker.bottleneck.1.weight": (bn, L, 1), "masker.bottleneck.1.bias": (bn,),
                    "masker.mask_net.0.weight": (1,), "masker.mask_net.1.weight": (S * L, skip or bn, 1),
                    "masker.mask_net.1.bias": (S * L,)}
        self.dilations = []
        for i in range(nb * nr):
            p, d = f"masker.TCN.{i}.", 2 ** (i % nb)
            self.dilations.append(d)
            expected.update({p + "shared_block.0.weight": (hid, bn, 1), p + "shared_block.0.bias": (hid,),
                             p + "shared_block.1.weight": (1,), p + "shared_block.2.gamma": (hid,),
                             p + "shared_block.2.beta": (hid,), p + "shared_block.3.weight": (hid, 1, k),
                             p + "shared_block.3.bias": (hid,), p + "shared_block.4.weight": (1,),
                             p + "shared_block.5.gamma": (hid,), p + "shared_block.5.beta": (hid,),
                             p + "res_conv.weight": (bn, hid, 1), p + "res_conv.bias": (bn,)})
            if skip:
                expected.update({p + "skip_conv.weight": (skip, hid, 1), p + "skip_conv.bias": (skip,)})
        extra = sorted(set(state) - set(expected))
        if extra:
            raise ValueError(f"unexpected tensor {extra[0]}")
        for name, shape in expected.items():
            if name not in state:
                raise ValueError(f"missing tensor {name}")
            if tuple(np.shape(state[name])) != shape:
                raise ValueError(f"{name} has shape {tuple(np.shape(state[name]))}, the network needs {shape}")
        self.w = {name: np.array(state[name], np.float32, order="C") for name in expected}  # 0-d stays 0-d
        bad = next((name for name, v in self.w.items() if not np.isfinite(v).all()), None)
        if bad is not None:
            raise ValueError(f"{bad} holds non-finite values")
        self.bn = bn
        # each block's residual and skip convolutions as one product: [bn + skip, hid]
        self._out_convs = []
        for i in range(nb * nr):
            p = f"masker.TCN.{i}."
            ws, bs = [self.w[p + "res_conv.weight"][:, :, 0]], [self.w[p + "res_conv.bias"]]
            if skip:
                ws.append(self.w[p + "skip_conv.weight"][:, :, 0])
                bs.append(self.w[p + "skip_conv.bias"])
            self._out_convs.append((np.concatenate(ws), np.concatenate(bs)))
        self.scale = float(self.w["scale"])
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise ValueError(f"scale {self.scale} is not a positive number")
        self.config = cfg

    def masker(self, x: np.ndarray) -> np.ndarray:
        """The TDConvNet: features ``[L, K]`` -> masks (or maps) ``[S, L, K]``.

        The same arithmetic as the torch model, reordered: each gLN is an affine
        map per channel, folded into the 1x1 convolution after it where there is
        one (the bottleneck; the residual and skip convolutions, stacked into one
        product); the one before the depthwise convolution is applied in place.
        """
        w = self.w
        a, c = _gln_affine(x, w["masker.bottleneck.0.gamma"], w["masker.bottleneck.0.beta"])
        out = _pointwise(x, *_folded(w["masker.bottleneck.1.weight"][:, :, 0], w["masker.bottleneck.1.bias"], a, c))
        skip_sum = None
        tmp = None
        for i, d in enumerate(self.dilations):
            p = f"masker.TCN.{i}."
            h = _pointwise(out, w[p + "shared_block.0.weight"][:, :, 0], w[p + "shared_block.0.bias"])
            if tmp is None:
                tmp = np.empty_like(h)
            _prelu_(h, w[p + "shared_block.1.weight"], tmp)
            a, c = _gln_affine(h, w[p + "shared_block.2.gamma"], w[p + "shared_block.2.beta"])
            h *= a[:, None]
            h += c[:, None]
            kernel = w[p + "shared_block.3.weight"]
            h = _depthwise(h, kernel, w[p + "shared_block.3.bias"], d, (kernel.shape[-1] - 1) * d // 2)
            _prelu_(h, w[p + "shared_block.4.weight"], tmp)
            a, c = _gln_affine(h, w[p + "shared_block.5.gamma"], w[p + "shared_block.5.beta"])
            wo, bo = self._out_convs[i]
            y = _pointwise(h, *_folded(wo, bo, a, c))  # [bn (+ skip), K]
            out += y[: self.bn]
            if self.skip:
                if skip_sum is None:
                    skip_sum = y[self.bn :].copy()
                else:
                    skip_sum += y[self.bn :]
        m = skip_sum if self.skip else out
        _prelu_(m, w["masker.mask_net.0.weight"], np.empty_like(m))
        score = _pointwise(m, w["masker.mask_net.1.weight"][:, :, 0], w["masker.mask_net.1.bias"])
        return self.act(score.reshape(self.n_src, self.latent_dim, -1))

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Latent mixture ``[L, K]`` -> latent estimates ``[S, L, K]`` (float32)."""
        z = np.asarray(z, np.float32)
        if z.ndim != 2 or z.shape[0] != self.latent_dim:
            raise ValueError(f"expected [{self.latent_dim}, K] latents, got {z.shape}")
        x = z / np.float32(self.scale)
        out = self.masker(x)
        if self.output == "mask":
            out = out * x[None]
        if self.consistency:  # the estimates add up to the mixture
            out += (x - out.sum(0)) / np.float32(self.n_src)
        return (out * np.float32(self.scale)).astype(np.float32, copy=False)
