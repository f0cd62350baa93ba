"""Entropy model fitting and range coding."""

import numpy as np
import pytest

from walloc_audio.entropy import EntropyCoder, count_symbols, fit_probabilities
from walloc_audio.errors import BitstreamError


def laplace_symbols(rng, channels=6, n=4000, max_symbol=31):
    scales = np.linspace(0.5, 8, channels)[:, None]
    return np.clip(np.round(rng.laplace(0, scales, (channels, n))), -max_symbol, max_symbol).astype(np.int32)


def test_fit_has_no_zero_probabilities(rng):
    import torch

    q = laplace_symbols(rng)
    counts = count_symbols(torch.from_numpy(q), 31)
    assert counts.shape == (6, 63) and counts.sum() == q.size
    p = fit_probabilities(counts)
    assert (p > 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-6)


def test_round_trip_and_rate_close_to_ideal(rng):
    import torch

    q = laplace_symbols(rng)
    coder = EntropyCoder(fit_probabilities(count_symbols(torch.from_numpy(q), 31)))
    payload = coder.encode(q)
    np.testing.assert_array_equal(coder.decode(payload, q.shape[1]), q)
    ideal = coder.bits(q)
    assert ideal <= 8 * len(payload) <= ideal * 1.01 + 64


def test_symbols_never_seen_in_training_still_code(rng):
    import torch

    q = np.zeros((3, 100), dtype=np.int32)
    coder = EntropyCoder(fit_probabilities(count_symbols(torch.from_numpy(q), 31)))
    rare = np.array([[31, -31, 0, 5], [0, 0, 0, 0], [-7, 7, 30, -30]], dtype=np.int32)
    np.testing.assert_array_equal(coder.decode(coder.encode(rare), 4), rare)


def test_each_packet_decodes_alone(rng):
    import torch

    q = laplace_symbols(rng, n=64)
    coder = EntropyCoder(fit_probabilities(count_symbols(torch.from_numpy(q), 31)))
    a, b = coder.encode(q[:, :32]), coder.encode(q[:, 32:])
    np.testing.assert_array_equal(coder.decode(b, 32), q[:, 32:])
    np.testing.assert_array_equal(coder.decode(a, 32), q[:, :32])


def test_malformed_payload():
    coder = EntropyCoder(fit_probabilities(np.ones((2, 7))))
    with pytest.raises(BitstreamError, match="32-bit"):
        coder.decode(b"abc", 4)


def test_invalid_tables_rejected():
    with pytest.raises(ValueError):
        EntropyCoder(np.array([[0.5, 0.0, 0.5]], dtype=np.float32))
