"""The WaLLoC codec model: WPT -> linear encoder -> bottleneck -> decoder -> inverse WPT.

Full-scale convention: audio is float in ``[-1, 1]`` (0 dBFS = 1.0) and is never
normalized per clip -- a stream has no "clip". Loud input that exceeds full
scale is clipped by the caller before encoding (and counted).

Timing: the analysis and the decoder are causal over frames of ``N = 2**J``
samples. Encoding a signal of ``T`` samples yields latent frames that describe
it with a delay: :meth:`WallocCodec.decode` of the first ``K`` latent frames
returns ``x`` delayed by ``delay_samples``. To get all of ``x`` back, encode
``flush_frames`` frames of silence after it (``compress`` does) and drop the
first ``delay_samples`` samples of the output.
"""

from __future__ import annotations

import torch
from torch import nn

from walloc_audio.tools.bottleneck import Bottleneck
from walloc_audio.config import CodecConfig
from walloc_audio.tools.decoder import Decoder
from walloc_audio.tools.framefir import FrameFIR, fir_frames
from walloc_audio.wavelets import frames_from_signal, packet_filters, signal_from_frames


class WallocCodec(nn.Module):
    """WaLLoC codec. Losses live in training code; this module only transforms.

    Shapes: audio ``[B, C, T]`` (``T`` a multiple of ``2**J``); latents and
    symbols ``[B, L, K]`` with ``K = T / 2**J``.
    """

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        c = config
        self.filters = packet_filters(c.J)
        self.encoder = nn.Parameter(torch.zeros(c.latent_dim, c.coefficients))  # 1x1 conv
        self.bottleneck = Bottleneck(c.latent_dim, c.latent_bits, c.compand_knee)
        self.decoder = Decoder(c.latent_dim, c.coefficients, c.decoder_width, c.decoder_depth,
                               c.decoder_kernel, c.lookahead_frames)
        # Optional post filter: a short causal FIR per output channel, starting as identity.
        self.post_filter = None
        if c.post_filter_taps:
            h = torch.zeros(c.channels, c.post_filter_taps)
            h[:, 0] = 1.0
            self.post_filter = nn.Parameter(h)
        self.register_buffer("_ana", torch.from_numpy(self.filters.analysis).float(), persistent=False)
        self.register_buffer("_syn", torch.from_numpy(self.filters.synthesis).float(), persistent=False)

    # -- fused linear taps -----------------------------------------------------------------
    def analysis_taps(self) -> torch.Tensor:
        """WPT analysis fused with the 1x1 encoder: ``[M, C*N, L]``.

        Channel ``c`` of the input frame feeds coefficients ``c*P .. c*P+P-1``:
        ``taps[j][c*N:(c+1)*N] = A[j] @ E[:, c*P:(c+1)*P].T``.
        """
        c, p = self.config.channels, self.config.frame
        e = self.encoder.reshape(-1, c, p)  # [L, C, P]
        return torch.einsum("mnp,lcp->mcnl", self._ana, e).reshape(self._ana.shape[0], c * p, -1)

    def synthesis_taps(self) -> torch.Tensor:
        """Linear decoder fused with WPT synthesis: ``[M, L, C*N]``."""
        c, p = self.config.channels, self.config.frame
        d = self.decoder.linear.reshape(c, p, -1)  # [C, P, L]
        return torch.einsum("mpn,cpl->mlcn", self._syn, d).reshape(self._syn.shape[0], -1, c * p)

    # -- offline API (fresh state; differentiable) ----------------------------------------------
    def analyze(self, x: torch.Tensor) -> torch.Tensor:
        """Float latents before companding -- a linear function of ``x``. ``[B, C, T] -> [B, L, K]``."""
        self._check_audio(x)
        taps = self.analysis_taps()
        frames = frames_from_signal(x.to(taps.dtype), self.config.frame)  # [K, B, C*N]
        hist = frames.new_zeros(taps.shape[0] - 1, *frames.shape[1:])
        return fir_frames(torch.cat([hist, frames]), taps).permute(1, 2, 0)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Integer symbols ``[B, L, K]``."""
        return self.bottleneck.symbols(self.analyze(x))

    def synthesize(self, z: torch.Tensor) -> torch.Tensor:
        """Dequantized latents ``[B, L, K]`` -> audio ``[B, C, K*N]`` (fresh state)."""
        if self.decoder.net is not None:
            return self.synthesize_packets(self.decoder(z))
        return self._synthesize_frames(z.permute(2, 0, 1), self.synthesis_taps(), z.shape[0])

    def synthesize_packets(self, coef: torch.Tensor) -> torch.Tensor:
        """Wavelet packet coefficients ``[B, C*P, K]`` (the decoder's output) -> audio ``[B, C, K*N]`` (fresh state)."""
        b, _, k = coef.shape
        return self._synthesize_frames(coef.reshape(b * self.config.channels, self.config.frame, k).permute(2, 0, 1),
                                       self._syn, b)

    def _synthesize_frames(self, frames: torch.Tensor, taps: torch.Tensor, batch: int) -> torch.Tensor:
        """Frames ``[K, B', D]`` through synthesis taps (zero history) -> audio ``[batch, C, K*N]``."""
        hist = frames.new_zeros(taps.shape[0] - 1, *frames.shape[1:])
        out = fir_frames(torch.cat([hist, frames.to(taps.dtype)]), taps)  # [K, B', C*N or N]
        pcm = signal_from_frames(out, out.shape[2] // self.config.frame).reshape(batch, self.config.channels, -1)
        return self.apply_post_filter(pcm)

    def apply_post_filter(self, pcm: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """Causal FIR ``y[n] = sum_k h[k] x[n-k]`` per channel; ``history``: the previous
        ``taps - 1`` samples ``[B, C, taps-1]`` (zeros when None). ``[B, C, T] -> [B, C, T]``."""
        if self.post_filter is None:
            return pcm
        c, k = self.post_filter.shape
        if history is None:
            history = pcm.new_zeros(pcm.shape[0], c, k - 1)
        x = torch.cat([history, pcm], dim=-1)
        return torch.nn.functional.conv1d(x, self.post_filter.flip(-1)[:, None, :], groups=c)

    @torch.no_grad()
    def decode(self, symbols: torch.Tensor) -> torch.Tensor:
        """Integer symbols ``[B, L, K]`` -> audio ``[B, C, K*N]`` delayed by ``delay_samples``."""
        return self.synthesize(self.bottleneck.dequantize(symbols))

    def forward(self, x: torch.Tensor, mode: str = "noise") -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: ``(reconstruction delayed by delay_samples, float latents)``."""
        y = self.analyze(x)
        return self.synthesize(self.bottleneck(y, mode)), y

    # -- streaming state ---------------------------------------------------------------------
    def analysis_stream(self) -> FrameFIR:
        """A stateful fused analysis filter over frames ``[K, B, C*N] -> [K, B, L]``."""
        with torch.no_grad():
            return FrameFIR(self.analysis_taps().detach().contiguous())

    def synthesis_stream(self) -> FrameFIR:
        """Stateful fused linear synthesis ``[K, B, L] -> [K, B, C*N]`` (linear decoders only)."""
        assert self.decoder.net is None, "nonlinear decoders stream through ChunkedDecoder"
        with torch.no_grad():
            return FrameFIR(self.synthesis_taps().detach().contiguous())

    def _check_audio(self, x: torch.Tensor) -> None:
        c = self.config
        assert x.dim() == 3 and x.shape[1] == c.channels, f"expected [B, {c.channels}, T], got {tuple(x.shape)}"
        if x.shape[2] % c.frame:
            raise ValueError(
                f"length {x.shape[2]} is not a multiple of the {c.frame}-sample frame; "
                "buffering to whole frames belongs to the streaming layer"
            )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
