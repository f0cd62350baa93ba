"""Packet-level encoder and decoder: the one code path for files and live streams.

:class:`PacketEncoder` takes PCM blocks of any size (1 sample or a whole file)
and emits packets of ``F`` latent frames; :class:`PacketDecoder` turns packets
back into PCM.

Bit-identical packets whatever the block partition. The analysis is linear and
shift-invariant by frames (an FIR filter over frames, :mod:`walloc_audio.tools.framefir`,
computed by lifting steps, :mod:`walloc_audio.lifting`): the latents of a run of
frames depend only on those frames of input and the ``M - 1`` frames before
them. The encoder computes latents in *groups* of ``G`` packets at fixed
positions of the stream (packets ``0..G-1``, ``G..2G-1``, ...), always with one
call on exactly ``M - 1 + G*F`` frames, however the input arrived; the last
group is zero-padded. Lifting is element-wise, and matrix libraries may round a
row differently only when the shape of the product changes, so fixing the shape
is what makes the bytes reproducible; quantization is an exactly rounded function of each latent
(:mod:`walloc_audio.tools.bottleneck`). Files use ``G = 4`` for throughput; a live
stream uses ``G = 1`` so a packet leaves as soon as its frames are in. Bytes
are identical for the same ``(F, G)``.

Version 2 (the default where the model has a v2 entropy model): each packet's
step follows the signal level and the quality or bitrate asked for
(:mod:`walloc_audio.ratecontrol`), and its payload carries that side
information (:mod:`walloc_audio.adaptive`). The decisions depend only on the
latents of earlier and current packets, so bytes still do not depend on how
the input was cut into blocks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .adaptive import E_MAX, E_UNITS, bands_for
from .bitstream import PACKET_HEADER_BYTES
from .errors import BitstreamError
from .noisefill import FillSpec, NoiseFill, decode_levels, encode_levels, measure, split_payload
from .pretrained import LoadedModel
from .ratecontrol import Q_DEFAULT, Q_RATE_MAX, Q_RATE_MIN, BitrateControl, LevelTracker, exponent_for
from .runtime import Synthesis


class RateSpec:
    """What the encoder is asked for: a constant quality or an average bitrate (v2 only).

    Args:
        quality: ``Q`` in 0..10 (constant quality); the default when ``kbps`` is None.
        kbps: average bitrate, container bytes included.
        max_payload: hard cap on a packet's payload bytes (datagrams); the step is
            coarsened until a packet fits.
        framing_bytes / fixed_bytes: bytes per packet beside the payload, and paid once
            (header, end packet), counted inside ``kbps``.
    """

    def __init__(self, quality: float | None = None, kbps: float | None = None, max_payload: int | None = None,
                 framing_bytes: int = PACKET_HEADER_BYTES, fixed_bytes: int = 0):
        if quality is not None and kbps is not None:
            raise ValueError("give a quality or a bitrate, not both")
        self.quality = Q_DEFAULT if quality is None and kbps is None else quality
        self.kbps, self.max_payload = kbps, max_payload
        self.framing_bytes, self.fixed_bytes = framing_bytes, fixed_bytes


class PacketEncoder:
    """PCM ``[C, n]`` float32 blocks -> ``(frames, payload)`` packets.

    Args:
        model: a loaded codec.
        frames_per_packet: ``F``; a packet covers ``F * 2**J`` samples.
        group_packets: ``G``, packets computed per filter call (see module doc).

    Samples outside ``[-1, 1]`` are clipped (full-scale convention) and counted
    in :attr:`clipped`.
    """

    def __init__(self, model: LoadedModel, frames_per_packet: int = 64, group_packets: int = 1,
                 rate: RateSpec | None = None, version: int | None = None, fill: FillSpec | None = None):
        assert frames_per_packet >= 1 and group_packets >= 1
        self.model = model
        self.config = c = model.config
        self.frames_per_packet = frames_per_packet
        self.group_packets = group_packets
        self.version = version or (2 if model.adaptive is not None else 1)
        if self.version == 2 and model.adaptive is None:
            raise ValueError(f"model {model.name!r} has no version-2 entropy model")
        self.rate = rate or RateSpec()
        self.bands = bands_for(frames_per_packet, c.latent_dim) if self.version == 2 else 0
        if fill is not None and self.version != 2:
            raise ValueError("noise fill needs a version-2 stream")
        self.fill = fill  # noise-fill levels after each payload (noisefill)
        self._fill_groups = self._fill_bands = None
        if fill is not None:  # the coefficients measured: the bands from the first group's to the last one's
            groups = fill.groups(c.J, c.sample_rate)
            used = [g for g in groups if g.size] or [np.zeros(1, dtype=np.int64)]
            lo, hi = int(used[0][0]), int(used[-1][-1]) + 1
            self._fill_bands = slice(lo, hi)
            self._fill_groups = [g - lo for g in groups]
        self.packet_seconds = frames_per_packet * c.frame / c.sample_rate
        self.packet_samples = frames_per_packet * c.frame
        self.group_samples = group_packets * self.packet_samples
        self._runtime = model.runtime
        self.history_samples = self._runtime.history_frames * c.frame
        self.reset()

    def reset(self) -> None:
        c = self.config
        self._history = np.zeros((c.channels, self.history_samples), dtype=np.float32)
        self._buffer = np.zeros((c.channels, self.group_samples), dtype=np.float32)
        self._fill = 0
        self.samples_in = 0
        self.frames_out = 0
        self.clipped = 0
        if self.version == 2:
            ad = self.model.adaptive
            self._level = LevelTracker(ad.reference_level, self.packet_seconds)
            r = self.rate
            self._control = None
            if r.kbps is not None:
                self._control = BitrateControl(r.kbps, self.packet_seconds, r.framing_bytes, r.fixed_bytes,
                                               initial_quality_for(self.model, r.kbps, self.frames_per_packet))

    def _measure(self, coef: np.ndarray) -> np.ndarray:
        return measure(coef, self._fill_groups, self.fill.block, self.fill.mid_side, self.fill.step_db)

    def _code_v2(self, y: np.ndarray, frames: int, levels: np.ndarray | None = None) -> bytes:
        """Choose the step of one packet's latents ``[L, n]``, quantize and code them.

        ``levels``: the packet's noise-fill levels ``[blocks, C, G]`` when the stream carries them."""
        ad = self.model.adaptive
        envelope = self._level.update(y)
        quality = self._control.quality if self._control is not None else self.rate.quality
        exponent = exponent_for(envelope, quality)

        def code(exponent: int) -> bytes:
            pk = ad.quantize(y, exponent, self.bands)
            if levels is None:
                return ad.encode(pk, self.bands)
            # A packet coded as silence gets no fill either: near-silence stays near-free and quiet.
            return ad.encode(pk, self.bands) + encode_levels(levels if not pk.silent else levels * 0, self.fill.planar,
                                                             self.fill.step_db)

        payload = code(exponent)
        cap = self.rate.max_payload
        while cap is not None and len(payload) > cap and exponent < E_MAX:
            exponent = min(exponent + 4, E_MAX)  # 3 dB coarser until the datagram fits
            payload = code(exponent)
        if self._control is not None:
            self._control.update(len(payload), frames / self.frames_per_packet)
        return payload

    def _run(self, span: np.ndarray, frames: list[int]) -> list[tuple[int, bytes]]:
        """Encode one group ``[C, G*P]``; emit packets declaring ``frames[i]`` frames each."""
        stream = np.concatenate([self._history, span], axis=1)  # [C, H + G*P]
        self._history = stream[:, stream.shape[1] - self.history_samples :].copy()
        if self.fill is not None:  # [L, G*F] latents and [C, fill bands, G*F] coefficients
            y, coef = self._runtime.analysis_frames(stream, coefficients=True, bands=self._fill_bands)
        else:
            y, coef = self._runtime.analysis_frames(stream), None  # lifting tree, then the encoder
        if self.version == 1:
            q = self._runtime.quantizer.symbols(y)
        f = self.frames_per_packet
        levels = None
        if coef is not None and f % self.fill.block == 0 and all(n == f for n in frames):
            levels = self._measure(coef[:, :, : len(frames) * f])  # whole packets: one call, the same levels
        per = f // self.fill.block if levels is not None else 0
        out = []
        for i, n in enumerate(frames):
            if self.version == 1:
                out.append((n, self.model.coder.encode(q[:, i * f : i * f + n])))
            else:
                lv = None
                if levels is not None:
                    lv = levels[i * per : (i + 1) * per]
                elif coef is not None:
                    lv = self._measure(coef[:, :, i * f : i * f + n])
                out.append((n, self._code_v2(np.ascontiguousarray(y[:, i * f : i * f + n]), n, lv)))
        self.frames_out += sum(frames)
        return out

    def push(self, block: np.ndarray) -> list[tuple[int, bytes]]:
        """Add ``[C, n]`` samples (any ``n >= 0``); return the packets now complete."""
        block = np.asarray(block, dtype=np.float32)
        assert block.ndim == 2 and block.shape[0] == self.config.channels, (
            f"expected [C={self.config.channels}, n], got {block.shape}"
        )
        over = np.abs(block) > 1.0
        if over.any():
            self.clipped += int(over.sum())
            block = np.clip(block, -1.0, 1.0)
        n, g = block.shape[1], self.group_samples
        full = [self.frames_per_packet] * self.group_packets
        self.samples_in += n
        out: list[tuple[int, bytes]] = []
        pos = 0
        if self._fill:  # complete the partial group first
            pos = min(n, g - self._fill)
            self._buffer[:, self._fill : self._fill + pos] = block[:, :pos]
            self._fill += pos
            if self._fill < g:
                return out
            out += self._run(self._buffer, full)
            self._fill = 0
        while n - pos >= g:  # whole groups straight from the block
            out += self._run(block[:, pos : pos + g], full)
            pos += g
        self._buffer[:, : n - pos] = block[:, pos:]
        self._fill = n - pos
        return out

    def flush(self) -> list[tuple[int, bytes]]:
        """Encode the rest plus ``flush_frames`` of silence, so every input sample decodes.

        The last group is zero-padded and computed like every other; its
        packets declare only the frames the stream still needs.
        """
        total = -(-self.samples_in // self.config.frame) + self.config.flush_frames
        out = []
        while self.frames_out < total:
            self._buffer[:, self._fill :] = 0.0
            self._fill = 0
            need, frames = total - self.frames_out, []
            for _ in range(self.group_packets):
                if need > 0:
                    frames.append(min(self.frames_per_packet, need))
                    need -= frames[-1]
            out += self._run(self._buffer, frames)
        return out


class PacketDecoder:
    """Packets -> PCM ``[C, frames * N]`` float32, delayed by ``config.delay_samples``.

    :meth:`decode_many` decodes several packets with one synthesis call
    (faster for files); the output does not depend on the grouping beyond
    float rounding (<= 1e-6).
    """

    def __init__(self, model: LoadedModel, version: int = 1, bands: int = 0, fill: FillSpec | None = None):
        self.model = model
        self.config = c = model.config
        self.version, self.bands = version, bands
        if version == 2 and (model.adaptive is None or not 1 <= bands <= model.config.latent_dim):
            raise BitstreamError(f"model {model.name!r} cannot decode version-2 packets with {bands} bands")
        if fill is not None and version != 2:
            raise BitstreamError("noise fill in a version-1 stream")
        self.fill = fill
        self._filler = None if fill is None else NoiseFill(fill, model.runtime._encoder, c.channels, c.J, c.sample_rate)
        self._synthesis = Synthesis(model.runtime, self._filler)
        self.reset()

    def reset(self) -> None:
        self._synthesis.reset()
        self._last = np.zeros(self.config.latent_dim, dtype=np.float32)
        self._gain = 1.0  # step ratio of the last v2 packet (silent packets keep it)

    def decode(self, frames: int, payload: bytes) -> np.ndarray:
        return self.decode_many([(frames, payload)])[0]

    @classmethod
    def for_header(cls, model: LoadedModel, header) -> "PacketDecoder":
        """A decoder for the stream ``header`` describes (version, bands)."""
        if header.version == 2 and model.adaptive_sha256 != header.entropy_sha256:
            raise BitstreamError(
                f"stream was coded with a v2 entropy model sha256 {header.entropy_sha256[:16]}..., the installed "
                f"{model.name!r} has {(model.adaptive_sha256 or 'none')[:16]}... (install the matching model)")
        return cls(model, header.version, header.bands, header.fill_spec())

    def latents(self, frames: int, payload: bytes) -> np.ndarray:
        """Dequantized latents ``[L, frames]`` of one packet (range decoding and dequantization only)."""
        return self._unpack(frames, payload)[0]

    def _unpack(self, frames: int, payload: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """A packet's dequantized latents and its noise-fill levels (None without fill)."""
        levels = None
        if self.version == 2 and self.fill is not None:
            payload, section = split_payload(payload)
            blocks = -(-frames // self.fill.block)
            levels = decode_levels(section, blocks, self.config.channels, len(self._filler.groups), self.fill.planar,
                                   self.fill.step_db)
        return self._latents(frames, payload), levels

    def _latents(self, frames: int, payload: bytes) -> np.ndarray:
        if self.version == 2:
            ad = self.model.adaptive
            q, e, s = ad.decode(payload, frames, self.bands)
            if e is not None:
                # The nonlinear decoder was trained at the model's own step: it sees the latents
                # divided by this packet's step ratio, so its residual follows the level too.
                self._gain = 2.0 ** (e / E_UNITS)
            return ad.dequantize(q, e, s, self.bands)
        return self.model.runtime.quantizer.dequantize(self._values(frames, payload))

    def decode_many(self, packets: Sequence[tuple[int, bytes]]) -> list[np.ndarray]:
        """Decode packets in order; returns one ``[C, frames * N]`` array per packet."""
        zs, gains = [], []
        for f, p in packets:
            z, levels = self._unpack(f, p)
            zs.append(z)
            if self._filler is not None:
                self._filler.push(levels, f)
            if self.version == 2:  # each frame's step ratio, for the nonlinear decoder
                gains.append(np.full(f, self._gain, dtype=np.float32))
        z = np.concatenate(zs, axis=1) if zs else np.zeros((self.config.latent_dim, 0), dtype=np.float32)
        return self.synthesize(z, [f for f, _ in packets], np.concatenate(gains) if gains else None)

    def _values(self, frames: int, payload: bytes) -> np.ndarray:
        """Reconstruction points of one packet's symbols (bin centroids where the coder knows them)."""
        coder = self.model.coder
        q = coder.decode(payload, frames)
        return coder.reconstruct(q) if hasattr(coder, "reconstruct") else q

    def synthesize(self, z: np.ndarray, sizes: Sequence[int], gain: np.ndarray | None = None) -> list[np.ndarray]:
        """Dequantized latents ``[L, sum(sizes)]`` -> PCM, split into ``len(sizes)`` pieces.

        ``gain`` ``[sum(sizes)]``: per-frame level for the nonlinear decoder (version 2)."""
        c = self.config
        if z.shape[1]:
            self._last = z[:, -1].copy()
        pcm = self._synthesis.process(z, gain)
        # Split per packet (a nonlinear decoder with look-ahead lags by `la` frames).
        bounds = np.cumsum([f * c.frame for f in sizes])[:-1]
        lag = pcm.shape[1] - sum(sizes) * c.frame
        return np.split(pcm, np.clip(bounds + lag, 0, pcm.shape[1]), axis=1)

    def conceal(self, frames: int, decay: float = 0.5) -> np.ndarray:
        """PCM for ``frames`` lost frames: the last good latent frame, fading out.

        Repeating the last frame with gain ``decay**k`` (k = 1, 2, ...) keeps the
        spectrum of the last sound and fades it to silence; the synthesis filter
        spans eight frames, so it cross-fades into and out of the concealment with
        no click. The next good packet resumes normally.
        """
        gains = (decay ** np.arange(1, frames + 1)).astype(np.float32)
        z = self._last[:, None] * gains[None, :]
        self._last = z[:, -1].copy() if frames else self._last
        level = np.full(frames, self._gain, dtype=np.float32) if self.version == 2 else None
        if self._filler is not None:
            self._filler.push(None, frames)  # nothing to fill in a concealment
        return self.synthesize(z, [frames], level)[0]


class OutputTrim:
    """Lines decoded PCM up with the input it came from, for writers.

    ``align`` drops the transform's delay at the start of the stream. ``release``
    holds back the newest ``hold`` samples: a stream carries a flush tail past the
    end of the audio, and only the end packet says where the audio ends. ``finish``
    then releases what belongs to the audio. Memory stays bounded by ``hold``
    whatever the stream's length.
    """

    def __init__(self, delay: int, hold: int, channels: int):
        self._skip, self.hold = delay, hold
        self._pending = np.zeros((channels, 0), dtype=np.float32)
        self.written = 0

    @classmethod
    def for_stream(cls, config, frames_per_packet: int, channels: int) -> "OutputTrim":
        """The tail is at most a packet plus the flush frames (one frame of rounding)."""
        return cls(config.delay_samples, (frames_per_packet + config.flush_frames + 1) * config.frame, channels)

    def align(self, pcm: np.ndarray) -> np.ndarray:
        if self._skip:
            cut = min(self._skip, pcm.shape[1])
            pcm, self._skip = pcm[:, cut:], self._skip - cut
        return pcm

    def release(self, pcm: np.ndarray) -> np.ndarray:
        """Append aligned PCM; return the samples that are certainly inside the audio."""
        self._pending = np.concatenate([self._pending, pcm], axis=1)
        n = max(0, self._pending.shape[1] - self.hold)
        out, self._pending = self._pending[:, :n], self._pending[:, n:]
        self.written += n
        return out

    def finish(self, num_samples: int | None, strict: bool = True) -> np.ndarray:
        """The rest up to ``num_samples`` in all (everything held when None).

        ``strict``: a count the held samples cannot meet is an error (a file);
        otherwise it is clamped (a live stream that lost its last packets).
        """
        held = self._pending.shape[1]
        rest = held if num_samples is None else num_samples - self.written
        if not 0 <= rest <= held:
            if strict:
                raise BitstreamError("end packet's sample count does not match the packets")
            rest = min(max(rest, 0), held)
        self.written += rest
        return self._pending[:, :rest]


def initial_quality_for(model: LoadedModel, kbps: float, frames_per_packet: int) -> float:
    """``Q`` at which the model's measured rate curve (music, this packet size) meets ``kbps``."""
    curve = rate_curve(model, frames_per_packet)
    if not curve:
        return Q_DEFAULT
    qs, rates = zip(*curve)
    return float(np.interp(np.log(kbps), np.log(rates), qs))


def rate_curve(model: LoadedModel, frames_per_packet: int) -> list[tuple[float, float]]:
    """``[(Q, kbps)]`` measured at export for the nearest packet size (empty if unknown)."""
    curves = (model.info.get("v2") or {}).get("rate_curves") or {}
    if not curves:
        return []
    sizes = sorted(int(k) for k in curves)
    best = min(sizes, key=lambda k: abs(np.log(k) - np.log(frames_per_packet)))
    return [(float(q), float(r)) for q, r in curves[str(best)]]


def bitrate_limits(model: LoadedModel, frames_per_packet: int) -> tuple[float, float] | None:
    """Lowest and highest average kbps the rate curve (music) reaches within rate control's range of Q."""
    curve = rate_curve(model, frames_per_packet)
    if not curve:
        return None
    rates = [r for q, r in curve if Q_RATE_MIN <= q <= Q_RATE_MAX]
    return min(rates), max(rates)
