"""The codec runtime in plain numpy: what encoding, decoding and streaming need, without torch.

A shipped model is a config and a safetensors file of arrays. :class:`RuntimeCodec`
turns those arrays into what the packet encoder and decoder
(:mod:`walloc_audio.codec_stream`) run:

* the packet tree by lifting (:mod:`walloc_audio.lifting`) followed by the 1x1
  encoder (its columns carrying the lifting's scalings), and the quantizer (step,
  square-root compander, rounding) -- the encoder; the fused FIR taps of the same
  function stay available as :attr:`RuntimeCodec.analysis_taps`;
* dequantization, the linear decoder fused with WPT synthesis, or the shallow
  nonlinear decoder (1x1 convolutions, dilated causal convolutions and Snake,
  evaluated incrementally by :class:`NetStream`) followed by WPT synthesis, the
  optional noise fill (:mod:`walloc_audio.noisefill`) before synthesis, and the
  optional post filter -- the decoder.

The torch model (:class:`walloc_audio.tools.model.WallocCodec`) loads the same file
and computes the same functions; it is there for training and for learning on
latents. The tests hold the two paths together (same symbols on all but a few
latents whose value sits within float rounding of a bin edge; decoded audio
within 1e-5).

Determinism: the lifting steps are element-wise float32 operations, the encoder
matrix is formed in float64 and rounded once, and the compander uses only
``* / + - sqrt`` (see :mod:`walloc_audio.tools.bottleneck`), so a symbol is a fixed
function of its float32 latent. Latents come from a BLAS matrix product, which is
reproducible on one machine for one call shape (the encoder fixes the shape) but may round
differently on another CPU; a file decodes the same everywhere up to float
rounding of the decoder.
"""

from __future__ import annotations

import functools

import numpy as np

from .config import CodecConfig
from .lifting import band_scales, packet_lifting, packet_unlifting
from .wavelets import freq_to_natural, packet_filters, signal_from_frames

F32 = np.float32


# -- frame-domain FIR ---------------------------------------------------------------------------

def fir_frames(buf: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Filter ``buf`` = ``[M-1+K, B, D_in]`` (history then new frames) -> ``[K, B, D_out]``.

    ``y[k] = sum_j x[k - j] @ taps[j]``: ``M`` matrix products over zero-copy views of
    the frame-major buffer, accumulated in place (see :mod:`walloc_audio.tools.framefir`).
    """
    m, d_in, d_out = taps.shape
    k, b = buf.shape[0] - (m - 1), buf.shape[1]
    assert k >= 0 and buf.shape[2] == d_in, f"bad buffer {buf.shape} for taps {taps.shape}"
    buf = np.ascontiguousarray(buf, dtype=taps.dtype)
    out = np.empty((k * b, d_out), dtype=taps.dtype)
    if k == 0:
        return out.reshape(k, b, d_out)
    tmp = np.empty_like(out)
    np.matmul(buf[m - 1 : m - 1 + k].reshape(k * b, d_in), taps[0], out=out)
    for j in range(1, m):
        np.matmul(buf[m - 1 - j : m - 1 - j + k].reshape(k * b, d_in), taps[j], out=tmp)
        out += tmp
    return out.reshape(k, b, d_out)


class FrameFIR:
    """Causal matrix-tap FIR over frames with state: ``[K, B, D_in] -> [K, B, D_out]`` per call."""

    def __init__(self, taps: np.ndarray):
        assert taps.ndim == 3, f"taps must be [M, D_in, D_out], got {taps.shape}"
        self.taps = np.ascontiguousarray(taps)
        self.num_taps, self.d_in, self.d_out = taps.shape
        self.reset()

    def reset(self) -> None:
        self._history: np.ndarray | None = None

    def process(self, x: np.ndarray) -> np.ndarray:
        assert x.ndim == 3 and x.shape[2] == self.d_in, f"expected frames [K, B, {self.d_in}], got {x.shape}"
        if self._history is None:
            self._history = np.zeros((self.num_taps - 1, x.shape[1], self.d_in), dtype=self.taps.dtype)
        assert x.shape[1] == self._history.shape[1], "batch size changed without reset()"
        buf = np.concatenate([self._history, x.astype(self.taps.dtype, copy=False)], axis=0)
        out = fir_frames(buf, self.taps)
        self._history = buf[buf.shape[0] - (self.num_taps - 1) :].copy()
        return out


class LiftingSynthesis:
    """The packet synthesis of :class:`FrameFIR` over ``packet_filters(J).synthesis`` taps, by inverse lifting.

    ``process(frames [K, C, P])`` (frequency-ordered, PyWavelets-scaled coefficients, as the
    FIR takes them) returns the same PCM ``[C, K * N]`` up to float32 rounding, at the same
    delay: the inverse tree (:func:`walloc_audio.lifting.packet_unlifting`, in C where built)
    runs over the last ``M - 1`` frames and the new ones, with zeros outside them, and keeps
    the ``K`` frames ``synthesis_delay`` before the end -- every one of them reaches no
    coefficient outside the buffer, so the zeros never show. About 40 operations a sample
    where the FIR's matrix taps cost ``M * N`` (2304 at J = 8).
    """

    def __init__(self, levels: int):
        f = packet_filters(levels)
        self.frame = 1 << levels
        self.history_frames = f.synthesis.shape[0] - 1
        self.delay = f.synthesis_delay
        nat = freq_to_natural(levels)
        self._from_freq = np.argsort(nat)  # frequency index of each natural band
        self._unscale = (1.0 / band_scales(levels)).astype(F32)[None, :, None]  # natural order
        self.reset()

    def reset(self) -> None:
        self._history: np.ndarray | None = None

    def process(self, frames: np.ndarray) -> np.ndarray:
        k, c, p = frames.shape
        assert p == self.frame, f"expected [K, C, {self.frame}] coefficient frames, got {frames.shape}"
        if self._history is None:
            self._history = np.zeros((c, p, self.history_frames), dtype=F32)
        raw = np.asarray(frames, dtype=F32).transpose(1, 2, 0)[:, self._from_freq] * self._unscale  # [C, P, K]
        buf = np.concatenate([self._history, raw], axis=2)
        self._history = buf[:, :, buf.shape[2] - self.history_frames :].copy()
        pcm = packet_unlifting(buf)  # [C, (H + K) * N]
        start = (self.history_frames - self.delay) * p
        return pcm[:, start : start + k * p]


# -- quantizer ----------------------------------------------------------------------------------

class Quantizer:
    """Per-channel step and square-root compander (the numpy twin of :class:`~walloc_audio.tools.bottleneck.Bottleneck`).

    Every operation is float32 with float32 constants, in the order the torch
    bottleneck uses, so both round the same latent to the same symbol.
    """

    def __init__(self, step: np.ndarray, bits: int, knee: float):
        self.step = np.ascontiguousarray(step, dtype=F32)
        self.knee = float(knee)
        self.max_symbol = 2 ** (bits - 1) - 1

    def symbols(self, y: np.ndarray) -> np.ndarray:
        """Latents ``[L, K]`` -> int32 symbols in ``[-A, A]``."""
        u = np.asarray(y, dtype=F32) / self.step[:, None]
        if self.knee > 0:
            b = F32(self.knee)
            u = np.sign(u) * (b * (np.sqrt(F32(1.0) + np.abs(u) * F32(2.0 / self.knee)) - F32(1.0)))
        return np.clip(np.round(u), -self.max_symbol, self.max_symbol).astype(np.int32)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """Symbols (or reconstruction points in symbol units) ``[L, K]`` -> float32 latents."""
        v = np.asarray(q, dtype=F32)
        if self.knee > 0:
            v = v + np.sign(v) * (v * v) * F32(0.5 / self.knee)
        return v * self.step[:, None]


# -- nonlinear decoder --------------------------------------------------------------------------

def snake(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``x + sin^2(alpha x) / alpha`` with ``alpha`` ``[C, 1]`` (``x`` ``[C, n]``)."""
    s = np.sin(alpha * x)
    return x + (s * s) / (alpha + F32(1e-9))


class NetStream:
    """Incremental evaluation of the decoder net: latent frames in any partition, each computed once.

    The net is ``1x1 conv -> depth x (Snake -> dilated causal conv -> Snake -> 1x1 conv, + skip)
    -> Snake -> 1x1 conv``; every dilated convolution keeps the last
    ``(kernel - 1) * dilation`` frames of its input. With ``lookahead_frames = la``
    the net sees its input shifted left by ``la`` frames (as the torch decoder does),
    so outputs trail inputs by ``la`` frames.

    ``process(z, gain)``: ``[L, n] -> [D, n']`` for the frames whose look-ahead has
    arrived: ``linear @ z + gain * net(z / gain)`` (``gain`` ``[n]``, the packets' step
    ratio in version-2 streams; ones when None).
    """

    def __init__(self, weights: dict[str, np.ndarray], config: CodecConfig):
        w = lambda k: np.ascontiguousarray(weights[f"decoder.{k}"], dtype=F32)  # noqa: E731
        flat = lambda k: (lambda a: a.reshape(a.shape[0], -1))(w(f"{k}.weight"))  # noqa: E731
        bias = lambda k: w(f"{k}.bias")[:, None]  # noqa: E731
        depth, kernel = config.decoder_depth, config.decoder_kernel
        self.linear = w("linear")
        self.lookahead = config.lookahead_frames
        self._in = (flat("net.0"), bias("net.0"))
        self._units = []
        for i in range(depth):
            u = f"net.{i + 1}.block"
            dilation = 3**i
            conv = w(f"{u}.1.weight")  # [O, C, k] -> [O, k*C] to match taps stacked by lag
            conv = np.ascontiguousarray(conv.transpose(0, 2, 1).reshape(conv.shape[0], -1))
            self._units.append((w(f"{u}.0.alpha")[0], conv, bias(f"{u}.1"), kernel, dilation,
                                (kernel - 1) * dilation, w(f"{u}.2.alpha")[0], flat(f"{u}.3"), bias(f"{u}.3")))
        self._snake_out = w(f"net.{depth + 1}.alpha")[0]
        self._out = (flat(f"net.{depth + 2}"), bias(f"net.{depth + 2}"))
        self.reset()

    def reset(self) -> None:
        self._state: list[np.ndarray | None] = [None] * len(self._units)
        # look-ahead: latents and gains of frames whose output is not out yet
        self._pending_z = np.zeros((self.linear.shape[1], 0), dtype=F32)
        self._pending_g = np.zeros(0, dtype=F32)
        self._skip = self.lookahead

    def _residual(self, zn: np.ndarray) -> np.ndarray:
        n = zn.shape[1]
        h = self._in[0] @ zn + self._in[1]
        for i, (a1, conv, b, k, d, ctx, a2, pw, pb) in enumerate(self._units):
            a = snake(h, a1)
            prev = self._state[i]
            if prev is None:
                prev = np.zeros((a.shape[0], ctx), dtype=F32)
            x = np.concatenate([prev, a], axis=1)
            self._state[i] = x[:, x.shape[1] - ctx :]
            # x[:, j*d : j*d + n] is the input j*d frames back from the newest tap: weight tap j
            taps = np.concatenate([x[:, j * d : j * d + n] for j in range(k)], axis=0)  # [k*C, n]
            y = conv @ taps + b
            h = h + (pw @ snake(y, a2) + pb)
        return self._out[0] @ snake(h, self._snake_out) + self._out[1]

    def process(self, z: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
        z = np.asarray(z, dtype=F32)
        g = np.ones(z.shape[1], dtype=F32) if gain is None else np.asarray(gain, dtype=F32)
        zn = z / g[None, :]
        if not self.lookahead:
            return self.linear @ z + self._residual(zn) * g[None, :]
        # The look-ahead decoder runs the causal net on its input shifted left by la frames:
        # output k is the net's output at k for input frames la, la+1, ...; the first la
        # latent frames never enter the net (the offline decoder pads its left edge with zeros).
        if self._skip:
            cut = min(self._skip, zn.shape[1])
            zn, self._skip = zn[:, cut:], self._skip - cut
        residual = self._residual(zn) if zn.shape[1] else np.zeros((self.linear.shape[0], 0), dtype=F32)
        self._pending_z = np.concatenate([self._pending_z, z], axis=1)
        self._pending_g = np.concatenate([self._pending_g, g])
        n = residual.shape[1]
        out = self.linear @ self._pending_z[:, :n] + residual * self._pending_g[None, :n]
        self._pending_z, self._pending_g = self._pending_z[:, n:], self._pending_g[n:]
        return out


# -- the codec ----------------------------------------------------------------------------------

class RuntimeCodec:
    """A model's arrays arranged for streaming: fused taps, quantizer, decoder.

    Args:
        config: the architecture.
        weights: the model file's arrays (``encoder``, ``bottleneck.log_step``,
            ``decoder.*``, ``post_filter``), as the torch state dict names them.
        step_scale: multiplies every quantizer step (version-1 ``--step-scale``).
    """

    def __init__(self, config: CodecConfig, weights: dict[str, np.ndarray], step_scale: float = 1.0):
        self.config = c = config
        self.weights = weights
        f = packet_filters(c.J)
        p = c.frame
        enc = np.asarray(weights["encoder"], dtype=np.float64).reshape(-1, c.channels, p)  # [L, C, P]
        self._encoder = enc
        self.analysis_delay = f.analysis_delay
        self._analysis_span = f.analysis.shape[0]
        # The encoder of the lifting path: natural band order, the lifting's scalings folded in.
        nat = freq_to_natural(c.J)
        self._natural = nat  # natural index of each frequency-ordered band
        self._band_scales_freq = band_scales(c.J)[nat].astype(F32)
        lifted = np.empty_like(enc)
        lifted[:, :, nat] = enc * band_scales(c.J)[nat]
        self.encoder_matrix = np.ascontiguousarray(lifted.reshape(enc.shape[0], -1), dtype=F32)  # [L, C*P]
        log_step = np.asarray(weights["bottleneck.log_step"], dtype=F32)
        if step_scale != 1.0:  # the torch model adds log(scale) to its float32 log step the same way
            log_step = log_step + F32(np.log(step_scale))
        self.step_scale = step_scale
        self.quantizer = Quantizer(np.exp(log_step.astype(np.float64)).astype(F32), c.latent_bits, c.compand_knee)
        self.linear_decoder = c.decoder_depth == 0
        if self.linear_decoder:
            dec = np.asarray(weights["decoder.linear"], dtype=np.float64).reshape(c.channels, p, -1)  # [C, P, L]
            ms = f.synthesis.shape[0]
            self.synthesis_taps = np.ascontiguousarray(
                np.einsum("mpn,cpl->mlcn", f.synthesis, dec, optimize=True).reshape(ms, -1, c.channels * p), dtype=F32)
        post = weights.get("post_filter")
        self.post_filter = None if post is None else np.ascontiguousarray(post, dtype=F32)  # [C, taps]

    @functools.cached_property
    def analysis_taps(self) -> np.ndarray:
        """The fused FIR taps ``[M, C*N, L]`` of WPT analysis then the encoder (float64, rounded once).

        ``taps[j][c*N:(c+1)*N] = A[j] @ E[:, c*P:(c+1)*P].T``. The encoder itself runs the lifting
        path (:meth:`analysis_frames`); these taps are the same function, for checks and tools.
        """
        f = packet_filters(self.config.J)
        m = f.analysis.shape[0]
        return np.ascontiguousarray(np.einsum("mnp,lcp->mcnl", f.analysis, self._encoder, optimize=True)
                                    .reshape(m, self.config.channels * self.config.frame, -1), dtype=F32)

    @property
    def history_frames(self) -> int:
        """Input frames before a run of frames that its latents depend on."""
        return self._analysis_span - 1

    def analysis_frames(self, stream: np.ndarray, coefficients: bool = False, bands: slice | None = None):
        """Float latents ``[L, K]`` of the last ``K`` frames of ``stream`` ``[C, (history_frames + K) * N]``.

        Packet tree by lifting (:mod:`walloc_audio.lifting`), then the 1x1 encoder: the
        latents of those frames given the ``history_frames`` before them. With
        ``coefficients``, also those frames' packet coefficients ``[C, P, K]`` in frequency
        order (what the noise fill measures), or only the frequency-ordered ``bands``.
        """
        c = self.config
        k = stream.shape[1] // c.frame - self.history_frames
        assert k >= 0 and stream.shape[1] % c.frame == 0, f"bad stream length {stream.shape[1]}"
        coef = packet_lifting(np.asarray(stream, dtype=F32), c.J)  # [C, P, history + K]
        off = self.history_frames - self.analysis_delay
        # The product reads the K columns in place (a row stride, no copy); its shape is fixed by K.
        y = self.encoder_matrix @ coef.reshape(-1, coef.shape[2])[:, off : off + k]
        if not coefficients:
            return y
        band = slice(None) if bands is None else bands
        kept = coef[:, self._natural[band], off : off + k]
        kept *= self._band_scales_freq[band][None, :, None]
        return y, kept

    # -- whole-signal helpers (fresh state; the packet coder streams the same functions) ----------
    def analyze(self, x: np.ndarray) -> np.ndarray:
        """PCM ``[C, T]`` (``T`` a multiple of the frame) -> float latents ``[L, T / N]``."""
        x = np.asarray(x, dtype=F32)
        return self.analysis_frames(np.pad(x, ((0, 0), (self.history_frames * self.config.frame, 0))))

    def synthesize(self, z: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
        """Dequantized latents ``[L, K]`` -> PCM ``[C, K * N]`` delayed by ``delay_samples`` (fresh state)."""
        return Synthesis(self).process(z, gain)


class Synthesis:
    """Stateful decoder: dequantized latents -> PCM, in any partition of frames.

    ``process(z [L, n], gain [n] | None)`` returns the PCM of the frames whose
    output is ready (``n`` frames, fewer at first with a look-ahead decoder).
    """

    def __init__(self, codec: RuntimeCodec, fill=None):
        self.codec = codec
        c = self.config = codec.config
        self.net = None if codec.linear_decoder else NetStream(codec.weights, codec.config)
        self.fill = fill  # a noisefill.NoiseFill: then the coefficients are formed before synthesis
        self._fused = codec.linear_decoder and fill is None
        # Latents straight to PCM through the fused taps, or coefficients through the inverse lifting tree.
        self.fir = FrameFIR(codec.synthesis_taps) if self._fused else LiftingSynthesis(c.J)
        self._post_history = None
        if codec.post_filter is not None:
            self._post_history = np.zeros((c.channels, codec.post_filter.shape[1] - 1), dtype=F32)

    def reset(self) -> None:
        self.fir.reset()
        if self.net is not None:
            self.net.reset()
        if self.fill is not None:
            self.fill.reset()
        if self._post_history is not None:
            self._post_history[:] = 0.0

    def process(self, z: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
        c = self.config
        z = np.asarray(z, dtype=F32)
        if self._fused:
            pcm = signal_from_frames(self.fir.process(np.ascontiguousarray(z.T)[:, None, :]), c.channels)[0]
        else:
            if self.net is None:
                coef = np.asarray(self.codec.weights["decoder.linear"], dtype=F32) @ z  # [C*P, n]
            else:
                coef = self.net.process(z, gain)  # [C*P, n]
            if self.fill is not None:
                coef = self.fill.apply(np.ascontiguousarray(coef, dtype=F32))
            frames = np.ascontiguousarray(coef.reshape(c.channels, c.frame, -1).transpose(2, 0, 1))  # [n, C, P]
            pcm = self.fir.process(frames)
        pcm = np.ascontiguousarray(pcm, dtype=F32)
        if self._post_history is not None and pcm.shape[1]:
            pcm = self._post_filter(pcm)
        return pcm

    def _post_filter(self, pcm: np.ndarray) -> np.ndarray:
        """Causal FIR ``y[n] = sum_k h[k] x[n-k]`` per channel, state carried across calls."""
        h = self.codec.post_filter
        k = h.shape[1]
        x = np.concatenate([self._post_history, pcm], axis=1)
        out = np.empty_like(pcm)
        for ch in range(pcm.shape[0]):
            out[ch] = np.convolve(x[ch], h[ch], mode="valid")
        if k > 1:
            self._post_history = x[:, x.shape[1] - (k - 1) :]
        return out


def weight_shapes(config: CodecConfig) -> dict[str, tuple[int, ...]]:
    """Every array a model file must hold for ``config`` (entropy tables aside), by name and shape.

    The names are the torch state dict's, so one file serves both paths; a test
    checks this against :class:`~walloc_audio.tools.model.WallocCodec`.
    """
    c = config
    L, D = c.latent_dim, c.coefficients
    shapes = {"encoder": (L, D), "bottleneck.log_step": (L,), "decoder.linear": (D, L)}
    if c.decoder_depth:
        w = c.decoder_width
        shapes.update({"decoder.net.0.weight": (w, L, 1), "decoder.net.0.bias": (w,)})
        for i in range(c.decoder_depth):
            u = f"decoder.net.{i + 1}.block"
            shapes.update({f"{u}.0.alpha": (1, w, 1), f"{u}.1.weight": (w, w, c.decoder_kernel), f"{u}.1.bias": (w,),
                           f"{u}.2.alpha": (1, w, 1), f"{u}.3.weight": (w, w, 1), f"{u}.3.bias": (w,)})
        shapes[f"decoder.net.{c.decoder_depth + 1}.alpha"] = (1, w, 1)
        shapes[f"decoder.net.{c.decoder_depth + 2}.weight"] = (D, w, 1)
        shapes[f"decoder.net.{c.decoder_depth + 2}.bias"] = (D,)
    if c.post_filter_taps:
        shapes["post_filter"] = (c.channels, c.post_filter_taps)
    return shapes
