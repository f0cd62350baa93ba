"""MUSDB access, the latent cache and the remix datasets, on tiny synthetic MUSDB-layout sets.

Every set is written into ``tmp_path`` by the test itself: tracks of tones and
noise, one folder per track with ``{mixture,drums,bass,other,vocals}.wav`` at
44.1 kHz stereo, and the real shipped ``stereo-5x-linear`` model encodes them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from separation.cache import build_cache, cache_stats, open_cache
from separation.data import (STEMS, DatasetError, LatentRemixDataset, LatentTrackDataset, WaveformRemixDataset,
                             open_musdb)
from walloc_audio.pretrained import load_model

from helpers import RATE, TRACKS, make_musdb, stem_signals  # noqa: F401  (shared with the recipe test)


@pytest.fixture(scope="module")
def model():
    return load_model("stereo-5x-linear")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("musdb")
    return root, make_musdb(root, silent_vocals=("Beta - Two",))


@pytest.fixture(scope="module")
def cache(dataset, model, tmp_path_factory):
    return build_cache(dataset[0], "train", model, tmp_path_factory.mktemp("c") / "cache16")


def offline_latents(model, x: np.ndarray) -> torch.Tensor:
    """Reference: one ``analyze`` call on ``x [T, 2]`` padded to whole frames plus the flush: ``[K, L]``."""
    cfg = model.config
    k = math.ceil(len(x) / cfg.frame) + cfg.flush_frames
    pad = np.zeros((k * cfg.frame, 2), np.float32)
    pad[: len(x)] = x
    with torch.no_grad():
        return model.codec.analyze(torch.from_numpy(pad.T.copy())[None])[0].T.double()


def rel(a, b) -> float:
    a, b = (v.double() if torch.is_tensor(v) else torch.from_numpy(np.array(v, dtype=np.float64)) for v in (a, b))
    return float((a - b).norm() / b.norm())


# ----------------------------------------------------------------------- musdb access


def test_open_musdb_wav_set(dataset):
    tracks = open_musdb(dataset[0], "train")
    assert [t.name for t in tracks] == sorted(TRACKS)
    assert tracks[0].is_wav and set(tracks[0].sources) == set(STEMS)


def test_open_musdb_validation_split_follows_the_roots_setup(tmp_path):
    from separation.stems import write_musdb_setup

    make_musdb(tmp_path)
    write_musdb_setup(tmp_path, sorted(TRACKS))  # one validation track of two (15 %, at least one)
    valid = [t.name for t in open_musdb(tmp_path, "train", split="valid")]
    train = [t.name for t in open_musdb(tmp_path, "train", split="train")]
    assert len(valid) == 1 and sorted(valid + train) == sorted(TRACKS)


def test_open_musdb_stem_mp4(tmp_path, model):
    import stempeg

    (tmp_path / "test").mkdir()
    s = stem_signals(1.0, seed=3)
    data = np.stack([sum(s.values())] + [s[k] for k in STEMS])  # mixture then stems, musdb's stem ids
    stempeg.write_stems(str(tmp_path / "test" / "Gamma - Three.stem.mp4"), data, sample_rate=RATE,
                        writer=stempeg.StreamsWriter(codec="aac", bitrate=256000))
    tracks = open_musdb(tmp_path, "test")  # is_wav detected: False
    assert not tracks[0].is_wav and tracks[0].name == "Gamma - Three"
    c = build_cache(tmp_path, "test", model, tmp_path / "cache", include_mixture=True)
    t = c.tracks[0]
    assert t.frames == math.ceil(t.samples / 256) + model.config.flush_frames and t.samples >= RATE
    assert c.index["source"]["is_wav"] is False


@pytest.mark.parametrize("break_it, named", [
    (lambda r: None, None),  # the root itself is missing
    (lambda r: (r / "train" / "Alpha - One" / "bass.wav").unlink(), "Alpha - One/bass.wav"),
    (lambda r: sf.write(r / "train" / "Beta - Two" / "other.wav", np.zeros((999, 2)), RATE), "Beta - Two/other.wav"),
    (lambda r: sf.write(r / "train" / "Beta - Two" / "drums.wav", np.zeros((52920, 2)), 48000), "drums.wav"),
])
def test_open_musdb_errors_name_the_file(tmp_path, break_it, named):
    root = tmp_path / "musdb"
    if named is None:
        with pytest.raises(DatasetError, match="no such folder") as err:
            open_musdb(root, "train")
        assert str(root) in str(err.value)
        return
    make_musdb(root)
    break_it(root)
    with pytest.raises(DatasetError) as err:
        open_musdb(root, "train")
    assert named in str(err.value), err.value
    assert err.value.exit_code == 9


def test_open_musdb_missing_subset_and_empty_set(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match=r"test: no such folder"):
        open_musdb(tmp_path, "test")
    with pytest.raises(DatasetError, match="empty set"):
        open_musdb(tmp_path, "train")


def test_wrong_channel_count_refused(tmp_path, model):
    make_musdb(tmp_path, tracks={"Mono - Track": 0.5})
    for stem in [*STEMS, "mixture"]:
        sf.write(tmp_path / "train" / "Mono - Track" / f"{stem}.wav", np.zeros(RATE // 2, np.float32), RATE)
    with pytest.raises(DatasetError, match=r"drums.wav: 1 channels, the model codes 2"):
        build_cache(tmp_path, "train", model, tmp_path / "cache")
    assert not list(tmp_path.glob("*cache*"))  # nothing left behind


# ----------------------------------------------------------------------- the cache


def test_cache_index_and_reopen(cache, dataset, model):
    index = json.loads((cache.path / "index.json").read_text())
    assert index["model"] == {"name": "stereo-5x-linear", "sha256": model.sha256, "config": model.config.to_dict()}
    assert index["stems"] == list(STEMS) and index["dtype"] == "float16" and index["version"] == 1
    assert [t["name"] for t in index["tracks"]] == sorted(TRACKS)
    for t, (name, stems) in zip(cache.tracks, sorted(dataset[1].items())):
        assert t.samples == len(stems["drums"])
        assert t.frames == math.ceil(t.samples / 256) + model.config.flush_frames
    assert not list(cache.path.parent.glob(".*"))  # no partial or old folder left
    again = open_cache(cache.path, model)
    np.testing.assert_array_equal(again.latents(1), cache.latents(1))
    assert again.latents(0).shape == (4, cache.tracks[0].frames, 108)


def test_existing_cache_needs_overwrite_and_interrupted_build_leaves_nothing(dataset, model, tmp_path):
    out = tmp_path / "cache"
    build_cache(dataset[0], "train", model, out)
    with pytest.raises(DatasetError, match="exists"):
        build_cache(dataset[0], "train", model, out)

    def interrupt(name):
        if name == "Beta - Two":
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        build_cache(dataset[0], "train", model, out, overwrite=True, progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # the old cache stands, no partial
    open_cache(out, model)
    with pytest.raises(KeyboardInterrupt):
        build_cache(dataset[0], "train", model, tmp_path / "fresh", progress=interrupt)
    with pytest.raises(DatasetError, match="not a latent cache"):
        open_cache(tmp_path / "fresh", model)


def test_stale_cache_refused(cache, model, tmp_path):
    other = dataclasses.replace(model, sha256="0" * 64)
    with pytest.raises(DatasetError) as err:
        open_cache(cache.path, other)
    assert model.sha256 in str(err.value) and "0" * 64 in str(err.value), err.value
    renamed = dataclasses.replace(model, name="stereo-20x-linear")
    with pytest.raises(DatasetError, match="built with model 'stereo-5x-linear'"):
        open_cache(cache.path, renamed)
    # a cache written by another format version is refused too
    copy = tmp_path / "old"
    copy.mkdir()
    index = json.loads((cache.path / "index.json").read_text())
    (copy / "index.json").write_text(json.dumps({**index, "version": 0}))
    with pytest.raises(DatasetError, match="version 0"):
        open_cache(copy, model)


def test_chunked_cache_equals_offline_analyze_and_linearity(dataset, cache, model, tmp_path):
    """float32 cache, chunks of 7 frames: each stem == one analyze call; mixture latent == sum of stems."""
    c32 = build_cache(dataset[0], "train", model, tmp_path / "c32", dtype="float32", chunk_frames=7)
    stems = dataset[1]["Alpha - One"]
    for s, name in enumerate(STEMS):
        assert rel(c32.latents(0)[s], offline_latents(model, stems[name])) < 1e-5
    mix = offline_latents(model, sum(stems.values()))  # analyze(sum of stems)
    err32 = rel(c32.latents(0).astype(np.float64).sum(0), mix)
    err16 = rel(cache.latents(0).astype(np.float64).sum(0), mix)
    print(f"linearity: float32 {err32:.2e}, float16 {err16:.2e}")
    assert err32 < 1e-5
    assert err16 < 1e-3


def test_cache_stats_ratio(cache, dataset, model, tmp_path):
    st = cache_stats(cache)
    samples = sum(len(s["drums"]) for s in dataset[1].values())
    assert (st.tracks, st.samples, st.stems) == (2, samples, 4)
    assert st.pcm16_bytes == samples * 2 * 2 * 4
    frames_ratio = samples / 256 / st.frames  # the flush frames cost a little on short tracks
    print(f"cache {st.bytes} B vs PCM16 {st.pcm16_bytes} B: {st.ratio:.2f}x (DR 4.74 x {frames_ratio:.3f})")
    assert 4.0 < st.ratio < model.config.dimension_reduction
    st32 = cache_stats(build_cache(dataset[0], "train", model, tmp_path / "c32", dtype="float32"))
    assert st32.ratio == pytest.approx(st.ratio / 2, rel=0.03)


def test_stored_mixture(dataset, model, tmp_path):
    c = build_cache(dataset[0], "train", model, tmp_path / "cm", dtype="float32", include_mixture=True)
    mix, stems = LatentTrackDataset(c, stored_mixture=True)[0]
    written = sf.read(dataset[0] / "train" / "Alpha - One" / "mixture.wav", dtype="float32")[0]
    assert rel(mix.T, offline_latents(model, written)) < 1e-5
    assert rel(mix, stems.sum(0)) < 1e-3  # mixture.wav is the PCM_16 rounding of the sum
    assert cache_stats(c).stems == 5


# ----------------------------------------------------------------------- datasets


def test_latent_remix_dataset(cache):
    ds = LatentRemixDataset(cache, 64, seed=7, samples_per_epoch=10)
    assert len(ds) == 10
    mix, stems = ds[3]
    assert mix.shape == (108, 64) and stems.shape == (4, 108, 64) and mix.dtype == torch.float32
    assert torch.equal(mix, stems.sum(0))  # mixture == sum of returned stems, exactly
    again = LatentRemixDataset(cache, 64, seed=7, samples_per_epoch=10)[3]
    assert torch.equal(again[1], stems)
    assert not torch.equal(LatentRemixDataset(cache, 64, seed=8)[3][1], stems)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][1], stems)
    ds.set_epoch(0)
    ds.cache.shard(0)  # an open memmap is not pickled (DataLoader workers map the shards themselves)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.cache._shards == [None] and torch.equal(clone[3][1], stems)


def test_latent_remix_without_remix_is_one_crop_of_one_track(cache):
    ds = LatentRemixDataset(cache, 32, remix=False, gain_db=(0, 0), seed=1)
    _, stems = ds[0]
    whole = [torch.from_numpy(cache.latents(t).astype(np.float32)).transpose(1, 2) for t in range(2)]
    hits = [(t, k) for t in range(2) for k in range(whole[t].shape[2] - 31)
            if torch.equal(whole[t][:, :, k : k + 32], stems)]
    assert len(hits) == 1


def test_latent_swap_and_silence(cache):
    _, plain = LatentRemixDataset(cache, 48, gain_db=(0, 0), seed=2)[5]
    _, swapped = LatentRemixDataset(cache, 48, gain_db=(0, 0), seed=2, swap_prob=1.0)[5]
    m = torch.from_numpy(cache.swap_matrix)
    assert torch.allclose(swapped, torch.einsum("ml,slf->smf", m, plain), atol=1e-5)
    # "Beta - Two" has silent vocals: silence-aware crops always find Alpha's
    ds = LatentRemixDataset(cache, 48, seed=3, silence_db=-50, samples_per_epoch=20)
    powers = [float(ds[i][1][3].pow(2).sum()) / (48 * 512) for i in range(20)]
    assert min(powers) > 1e-5


def test_latent_track_dataset(cache):
    ds = LatentTrackDataset(cache)
    assert len(ds) == 2
    mix, stems = ds[1]
    assert stems.shape == (4, 108, cache.tracks[1].frames) and torch.equal(mix, stems.sum(0))
    with pytest.raises(DatasetError, match="include_mixture"):
        LatentTrackDataset(cache, stored_mixture=True)


def test_waveform_remix_dataset(dataset):
    ds = WaveformRemixDataset(dataset[0], "train", 256 * 40, seed=5, samples_per_epoch=8, swap_prob=0.5)
    mix, stems = ds[2]
    assert mix.shape == (2, 10240) and stems.shape == (4, 2, 10240)
    assert torch.equal(mix, stems.sum(0))
    assert torch.equal(WaveformRemixDataset(dataset[0], "train", 10240, seed=5, swap_prob=0.5)[2][1], stems)
    # a crop with unit gain and no swap is the file's samples at a frame-aligned position
    _, one = WaveformRemixDataset(dataset[0], "train", 2560, remix=False, gain_db=(0, 0), seed=4)[0]
    audio = {n: s["drums"] for n, s in dataset[1].items()}
    found = [n for n, x in audio.items() for k in range(0, len(x) - 2560 + 1, 256)
             if np.array_equal(x[k : k + 2560].T, one[0].numpy())]
    assert len(found) == 1
