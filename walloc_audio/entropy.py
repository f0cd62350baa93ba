"""Per-channel static entropy model and range coding with constriction.

Each latent channel ``k`` has its own categorical distribution over the
alphabet ``[-A, A]``, fitted from symbol counts on training data and smoothed
(add-``alpha``) so that no symbol has zero probability: any symbol the
quantizer can emit is codable, just expensive. The tables are stored with the
model weights (``[L, 2A+1]`` float32) and turned into constriction models once.

A packet's payload is one range-coded message holding its ``F`` frames,
channel-major (all of channel 0, then channel 1, ...), so every packet decodes
on its own -- the property streaming, loss concealment and seeking need.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch

from .errors import BitstreamError


def fit_probabilities(counts: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Smoothed probabilities from symbol counts ``[L, S]`` (add-``alpha``)."""
    counts = np.asarray(counts, dtype=np.float64)
    assert counts.ndim == 2, f"counts must be [L, S], got {counts.shape}"
    p = counts + alpha
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def count_symbols(symbols: torch.Tensor, max_symbol: int) -> np.ndarray:
    """Histogram of symbols ``[..., L, K]`` per channel -> ``[L, 2A+1]`` int64."""
    s = symbols.transpose(0, -2).reshape(symbols.shape[-2], -1) if symbols.dim() > 2 else symbols
    s = (s.to(torch.int64) + max_symbol).clamp(0, 2 * max_symbol)
    out = torch.zeros(s.shape[0], 2 * max_symbol + 1, dtype=torch.int64)
    out.scatter_add_(1, s, torch.ones_like(s))
    return out.numpy()


class EntropyCoder:
    """Range coder over per-channel categorical models.

    Args:
        probabilities: ``[L, S]`` float32, rows sum to 1, all entries > 0.
    """

    def __init__(self, probabilities: np.ndarray):
        probs = np.ascontiguousarray(probabilities, dtype=np.float32)
        assert probs.ndim == 2 and probs.shape[1] % 2 == 1, f"probabilities must be [L, 2A+1], got {probs.shape}"
        if not np.all(probs > 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("entropy model rows must be positive and sum to 1")
        self.probabilities = probs
        self.channels, self.alphabet = probs.shape
        self.max_symbol = self.alphabet // 2
        self._models = [constriction.stream.model.Categorical(row, perfect=False) for row in probs]

    def bits(self, symbols: np.ndarray) -> float:
        """Ideal code length of ``[L, K]`` symbols under the model, in bits."""
        idx = np.asarray(symbols) + self.max_symbol
        rows = np.arange(self.channels)[:, None]
        return float(-np.log2(self.probabilities[rows, idx]).sum())

    def encode(self, symbols: np.ndarray) -> bytes:
        """Symbols ``[L, F]`` (int, in ``[-A, A]``) -> payload bytes."""
        assert symbols.ndim == 2 and symbols.shape[0] == self.channels, (
            f"expected symbols [{self.channels}, F], got {symbols.shape}"
        )
        idx = np.ascontiguousarray(symbols, dtype=np.int32) + self.max_symbol
        enc = constriction.stream.queue.RangeEncoder()
        for k, model in enumerate(self._models):
            enc.encode(idx[k], model)
        return enc.get_compressed().tobytes()

    def decode(self, payload: bytes, frames: int) -> np.ndarray:
        """Payload bytes -> symbols ``[L, frames]`` int32. Raises BitstreamError if malformed."""
        if len(payload) % 4:
            raise BitstreamError("packet payload is not a whole number of 32-bit words")
        words = np.frombuffer(payload, dtype=np.uint32).copy()
        out = np.empty((self.channels, frames), dtype=np.int32)
        try:
            dec = constriction.stream.queue.RangeDecoder(words)
            for k, model in enumerate(self._models):
                out[k] = dec.decode(model, frames)
        except Exception as exc:  # constriction raises plain errors on garbage
            raise BitstreamError(f"packet payload cannot be range-decoded ({exc})") from None
        return out - self.max_symbol
