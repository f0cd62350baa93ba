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


# -- context-adaptive model ---------------------------------------------------------------

def bursty_symbols(rng, channels=8, n=6000, max_symbol=2047):
    """Symbols whose spread follows a loudness envelope shared by all channels (as music's does)."""
    env = np.repeat(np.exp(rng.uniform(np.log(0.3), np.log(40.0), n // 50)), 50)[:n]
    scales = np.linspace(0.5, 2.0, channels)[:, None] * env[None, :]
    return np.clip(np.round(rng.laplace(0, scales)), -max_symbol, max_symbol).astype(np.int32)


def fitted_context_coder(q, packet=64):
    from walloc_audio.entropy import ContextCoder, fit_context_model

    return ContextCoder(*fit_context_model([q], [q.astype(np.float32)], packet), 2047)


def test_context_coder_round_trip_packets_alone(rng):
    q = bursty_symbols(rng)
    coder = fitted_context_coder(q)
    parts = [q[:, i : i + 64] for i in range(0, 256, 64)] + [q[:, 256:257], q[:, 257:259]]
    payloads = [coder.encode(p) for p in parts]
    for p, payload in reversed(list(zip(parts, payloads))):  # any order: each packet decodes alone
        np.testing.assert_array_equal(coder.decode(payload, p.shape[1]), p)
    ideal = coder.bits(q[:, :64])
    assert ideal <= 8 * len(payloads[0]) <= ideal * 1.02 + 64


def test_context_model_beats_static_tables_when_loudness_varies(rng):
    import torch

    train, test = bursty_symbols(rng), bursty_symbols(rng)
    static = EntropyCoder(fit_probabilities(count_symbols(torch.from_numpy(train), 2047)))
    ctx = fitted_context_coder(train)
    static_bytes = sum(len(static.encode(test[:, i : i + 64])) for i in range(0, test.shape[1], 64))
    ctx_bytes = sum(len(ctx.encode(test[:, i : i + 64])) for i in range(0, test.shape[1], 64))
    assert ctx_bytes < 0.9 * static_bytes, (ctx_bytes, static_bytes)


def test_context_coder_rejects_garbage_and_codes_extremes(rng):
    q = bursty_symbols(rng, n=600)
    coder = fitted_context_coder(q)
    extreme = np.array([[2047, -2047, 0], [0, 5, -2047]] * 4, dtype=np.int32)
    np.testing.assert_array_equal(coder.decode(coder.encode(extreme), 3), extreme)
    with pytest.raises(BitstreamError, match="32-bit"):
        coder.decode(b"abcde", 4)
    for bad in (dict(scales=np.zeros((8, 16))), dict(thresholds=np.array([3.0, 2.0]))):
        args = dict(scales=coder.scales, offsets=coder.offsets, thresholds=coder.thresholds)
        args.update(bad)
        if "scales" in bad:
            args["offsets"] = np.zeros_like(args["scales"])
        with pytest.raises(ValueError):
            type(coder)(args["scales"], args["offsets"], args["thresholds"], 2047)


def test_centroid_offsets_are_measured_and_move_towards_zero(rng):
    from walloc_audio.entropy import ContextCoder, fit_context_model

    v = rng.laplace(0, 1.0, (4, 20000)).astype(np.float32)  # steep: centroids sit well inside the bins
    q = np.round(v).astype(np.int32)
    scales, offsets, th = fit_context_model([q], [v], 64)
    assert offsets[offsets != 0].mean() > 0.03
    coder = ContextCoder(scales, offsets, th, 2047)
    r = coder.reconstruct(q[:, :64])
    nz = q[:, :64] != 0
    assert (np.abs(r[nz]) < np.abs(q[:, :64][nz])).all() and (r[~nz] == 0).all()
    # The centroids lower the reconstruction error of rounding.
    err_mid = np.mean((q[:, :64] - v[:, :64]) ** 2)
    err_cen = np.mean((r - v[:, :64]) ** 2)
    assert err_cen < err_mid


def test_rebinned_tables_follow_the_step(rng):
    import torch

    from walloc_audio.entropy import rebin_probabilities

    v = rng.laplace(0, np.linspace(0.5, 8, 6)[:, None], (6, 20000))
    q = np.clip(np.round(v), -63, 63).astype(np.int32)
    p = fit_probabilities(count_symbols(torch.from_numpy(q), 63))
    np.testing.assert_allclose(rebin_probabilities(p, 1.0), p, atol=1e-6)
    coarse = rebin_probabilities(p, 2.0)
    np.testing.assert_allclose(coarse.sum(axis=1), 1, atol=1e-5)
    # Symbols of a step twice as large: the table fitted on them and the re-binned one agree
    # (mass is taken uniform inside the old bins, which is close for all but the steepest channels).
    q2 = np.clip(np.round(v / 2), -63, 63).astype(np.int32)
    fitted = fit_probabilities(count_symbols(torch.from_numpy(q2), 63))
    assert np.abs(coarse - fitted)[2:, 60:67].max() < 0.03
