"""Packet-level encoder and decoder: the one code path for files and live streams.

:class:`PacketEncoder` takes PCM blocks of any size (1 sample or a whole file)
and emits packets of ``F`` latent frames. It buffers whole packets and runs
every filter call on exactly ``F`` frames, so the packets are bit-identical
whatever the block partition of the input. :class:`PacketDecoder` turns packets
back into PCM, keeping filter state across packets.
"""

from __future__ import annotations

import numpy as np
import torch

from .pretrained import LoadedModel
from .wavelets import frames_from_signal, signal_from_frames


class PacketEncoder:
    """PCM ``[C, n]`` float32 blocks -> ``(frames, payload)`` packets.

    Samples outside ``[-1, 1]`` are clipped (full-scale convention) and counted
    in :attr:`clipped`.
    """

    def __init__(self, model: LoadedModel, frames_per_packet: int = 64):
        self.model = model
        self.config = model.config
        self.frames_per_packet = frames_per_packet
        self.packet_samples = frames_per_packet * self.config.frame
        self._fir = model.codec.analysis_stream()
        self._bottleneck = model.codec.bottleneck
        self.reset()

    def reset(self) -> None:
        self._fir.reset()
        self._buffer = np.zeros((self.config.channels, self.packet_samples), dtype=np.float32)
        self._fill = 0
        self.samples_in = 0
        self.frames_out = 0
        self.clipped = 0

    def _encode_packet(self, frames: int) -> tuple[int, bytes]:
        x = torch.from_numpy(self._buffer)[None]  # [1, C, F*N], always the same shape
        with torch.no_grad():
            y = self._fir.process(frames_from_signal(x, self.config.frame))  # [F, 1, L]
            q = self._bottleneck.symbols(y[:, 0, :].T.contiguous())  # [L, F]
        self.frames_out += frames
        self._fill = 0
        return frames, self.model.coder.encode(q[:, :frames].numpy())

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
        self.samples_in += block.shape[1]
        out = []
        pos = 0
        while pos < block.shape[1]:
            take = min(block.shape[1] - pos, self.packet_samples - self._fill)
            self._buffer[:, self._fill : self._fill + take] = block[:, pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == self.packet_samples:
                out.append(self._encode_packet(self.frames_per_packet))
        return out

    def flush(self) -> list[tuple[int, bytes]]:
        """Encode the rest plus ``flush_frames`` of silence, so every input sample decodes.

        The last packets are computed at full size (zero-padded) like every
        other packet and declare only the frames the stream needs.
        """
        total = -(-self.samples_in // self.config.frame) + self.config.flush_frames
        out = []
        while self.frames_out < total:
            self._buffer[:, self._fill :] = 0.0
            out.append(self._encode_packet(min(self.frames_per_packet, total - self.frames_out)))
        return out


class PacketDecoder:
    """Packets -> PCM ``[C, frames * N]`` float32, delayed by ``config.delay_samples``."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.config = model.config
        codec = model.codec
        self._linear = codec.decoder.net is None
        if self._linear:
            self._fir = codec.synthesis_stream()
        else:
            from .framefir import FrameFIR

            self._fir = FrameFIR(codec._syn)
            self._context = codec.decoder.receptive_field - 1
        self.reset()

    def reset(self) -> None:
        self._fir.reset()
        self._latents = torch.zeros(self.config.latent_dim, 0)
        self._received = 0
        self._emitted = 0

    def decode(self, frames: int, payload: bytes) -> np.ndarray:
        q = torch.from_numpy(self.model.coder.decode(payload, frames))
        with torch.no_grad():
            z = self.model.codec.bottleneck.dequantize(q)  # [L, F]
            return self._synthesize(z)

    def _synthesize(self, z: torch.Tensor) -> np.ndarray:
        c = self.config
        if self._linear:
            out = self._fir.process(z.T.contiguous()[:, None, :])  # [F, 1, C*N]
            return signal_from_frames(out, c.channels)[0].numpy()
        # Nonlinear decoder: run the net on (context + new frames) and emit the
        # frames whose look-ahead has arrived. Absolute frame counters: the
        # buffer starts at frame `base`; frames before `emitted` are out already.
        la = c.lookahead_frames
        buf = torch.cat([self._latents, z], dim=1)
        base = self._received - self._latents.shape[1]
        self._received += z.shape[1]
        ready_end = max(self._emitted, self._received - la)
        coef = self.model.codec.decoder(buf[None])[0]  # [C*P, len(buf)]
        ready = coef[:, self._emitted - base : ready_end - base]
        self._emitted = ready_end
        keep = self._context + la
        self._latents = buf[:, max(0, buf.shape[1] - keep) :]
        frames = ready.reshape(c.channels, c.frame, -1).permute(2, 0, 1).contiguous()
        out = self._fir.process(frames)  # [K, C, N]
        return signal_from_frames(out, 1)[:, 0].numpy()
