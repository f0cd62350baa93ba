"""Separation scoring: the codec ceiling, museval on estimates, MUSDB-style aggregation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch

from helpers import RATE, stem_signals
from separation.evaluate import (STEMS, aggregate, codec_oracle, ideal_ratio_masks, packet_ratio_masks,
                                 score_estimates)
from separation.models import WallocFrontEnd
from walloc_audio.pretrained import load_model


def fake_track(seconds: float = 3.0, silent=()):
    stems = {k: v.astype(np.float64) for k, v in stem_signals(seconds, seed=1).items()}
    for s in silent:
        stems[s][:] = 0.0
    targets = {s: SimpleNamespace(audio=stems[s]) for s in STEMS}
    return SimpleNamespace(name="Fake - Track", rate=RATE, targets=targets, audio=sum(stems.values()))


def test_codec_ceiling_is_each_true_stem_through_the_codec():
    track = fake_track()
    front = WallocFrontEnd(load_model("stereo-5x-linear"))
    est = codec_oracle(front, track)
    assert set(est) == set(STEMS)
    for s in STEMS:
        ref = track.targets[s].audio
        assert est[s].shape == ref.shape
        # Aligned (delay removed): tones come back closely; white-noise stems lose the high bands the codec drops.
        snr = 10 * np.log10((ref**2).sum() / ((est[s] - ref) ** 2).sum())
        assert snr > (0.5 if s in ("drums", "other") else 15.0), (s, snr)
    # The codec is linear: the coded stems add up to the coded mixture.
    mix = track.audio
    x = torch.from_numpy(np.ascontiguousarray(mix.T, dtype=np.float32))[None]
    coded_mix = front.decode(front.encode(x)[:, None], mix.shape[0])[0, 0].T.numpy()
    np.testing.assert_allclose(sum(est.values()), coded_mix, atol=1e-4)


def test_scores_exclude_silent_references_and_aggregate_by_medians():
    track = fake_track(silent=("vocals",))
    rng = np.random.default_rng(0)
    refs = {s: track.targets[s].audio for s in STEMS}
    good, bad = ({s: v + k * (np.std(v) + 1e-3) * rng.standard_normal(v.shape) for s, v in refs.items()}
                 for k in (0.01, 0.1))  # ~40 dB and ~20 dB SNR
    good, bad = score_estimates(track, good), score_estimates(track, bad)
    assert good["silent"] == ["vocals"] and "vocals" not in good["stems"]
    for s in ("drums", "bass", "other"):
        assert good["stems"][s]["SDR"] > bad["stems"][s]["SDR"] > 10.0
    agg = aggregate([good, bad])
    assert agg["vocals"]["excluded_silent"] == 2 and math.isnan(agg["vocals"]["SDR"])
    assert agg["drums"]["tracks"] == 2
    assert agg["drums"]["SDR"] == np.median([good["stems"]["drums"]["SDR"], bad["stems"]["drums"]["SDR"]])
    assert agg["avg"]["SDR"] == np.mean([agg[s]["SDR"] for s in ("drums", "bass", "other")])


def test_a_stem_without_a_scorable_window_is_counted_not_a_nan():
    """BSS-eval v4 skips each window where some reference is silent: drums only in the 1st second and
    vocals only in the 2nd leave no window for anything -- the track is listed, not averaged in as NaN."""
    track = fake_track(seconds=3.0)
    drums, vocals = track.targets["drums"].audio, track.targets["vocals"].audio
    drums[RATE:] = 0.0
    vocals[:RATE] = 0.0
    vocals[2 * RATE:] = 0.0
    track.audio = sum(track.targets[s].audio for s in STEMS)
    est = {s: track.targets[s].audio + 0.01 * np.random.default_rng(1).standard_normal(drums.shape) for s in STEMS}
    odd = score_estimates(track, est)
    assert odd["silent"] == [] and odd["stems"] == {} and odd["unscorable"] == list(STEMS)
    normal = score_estimates(fake_track(), {s: v + 0.01 * (np.std(v) + 1e-3) * np.random.default_rng(2).standard_normal(
        v.shape) for s, v in ((s, t.audio) for s, t in fake_track().targets.items())})
    assert all(normal["stems"][s]["windows"] == 3 for s in STEMS)
    agg = aggregate([odd, normal])
    for s in STEMS:
        assert agg[s]["tracks"] == 1 and agg[s]["excluded_unscorable"] == 1 and math.isfinite(agg[s]["SDR"])
    assert math.isfinite(agg["avg"]["SDR"])


def test_ideal_ratio_masks_split_the_mixture_by_stem_power():
    rng = np.random.default_rng(3)
    stems = rng.standard_normal((4, 6, 50)).astype(np.float32)
    stems[:, :, :10] = 0.0  # every stem silent: a quarter each
    stems[1:, :, 10:20] = 0.0  # only the first stem sounds: all of the mixture is its
    mixture = stems.sum(axis=0) + 0.01 * rng.standard_normal((6, 50)).astype(np.float32)  # coded apart: not the sum
    est = ideal_ratio_masks(stems, mixture)
    assert est.shape == stems.shape and est.dtype == np.float32
    np.testing.assert_allclose(est.sum(axis=0), mixture, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(est[:, :, :10], np.broadcast_to(mixture[:, :10] / 4, (4, 6, 10)), rtol=1e-6)
    np.testing.assert_allclose(est[0, :, 10:20], mixture[:, 10:20], rtol=1e-6)
    assert not est[1:, :, 10:20].any()
    # the louder stem of a coefficient gets the larger share
    loud = np.abs(stems[0, :, 20:]) > np.abs(stems[1, :, 20:])
    assert (np.abs(est[0, :, 20:])[loud] >= np.abs(est[1, :, 20:])[loud]).all()


def test_packet_ratio_masks_split_the_decoded_mixture():
    front = WallocFrontEnd(load_model("stereo-5x-linear"))
    x = fake_track(seconds=1.0)
    mix = torch.from_numpy(np.ascontiguousarray(x.audio.T, dtype=np.float32))[None]
    stems = torch.stack([front.encode(torch.from_numpy(np.ascontiguousarray(x.targets[s].audio.T,
                                                                           dtype=np.float32))[None])[0] for s in STEMS])
    z, m = stems.numpy(), front.encode(mix)[0].numpy()
    n = x.audio.shape[0]
    est = packet_ratio_masks(front, z, m, n)
    assert est.shape == (4, 2, n)
    decoded_mix = front.decode(torch.from_numpy(m)[None, None], n)[0, 0].numpy()
    np.testing.assert_allclose(est.sum(axis=0), decoded_mix, atol=1e-4)  # the masks sum to one, synthesis is linear
    # one stem alone in the mixture gets all of it
    lone = np.zeros_like(z)
    lone[2] = z[2]
    est = packet_ratio_masks(front, lone, z[2], n)
    np.testing.assert_allclose(est[2], front.decode(torch.from_numpy(z[2])[None, None], n)[0, 0].numpy(), atol=1e-5)
    assert np.abs(est[[0, 1, 3]]).max() < 1e-6
