""".wlc tar shards: coding a set once, reading dequantized latents back, corrupt data, quantized remixing."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from separation.data import DatasetError
from separation.shards import (ROWS, ShardRemixStream, Skips, build_shards, encode_array, iter_tracks, open_shards,
                               open_sources, read_latents, remix_gap)
from walloc_audio.compress import compress_file
from walloc_audio.pretrained import load_model

from helpers import make_musdb

TRACKS = {"Alpha - One": 1.5, "Beta - Two": 1.2, "Gamma - Three": 1.3}


@pytest.fixture(scope="module")
def model():
    return load_model("stereo-5x-linear")


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("musdb")
    make_musdb(root, TRACKS)
    return root, build_shards(root, "train", model, tmp_path_factory.mktemp("wlc") / "train", tracks_per_shard=2)


def test_shards_hold_what_encode_writes_and_decode_to_its_latents(shard_set, model, tmp_path):
    root, shards = shard_set
    assert len(shards.files) == 2 and [len(s["tracks"]) for s in shards.index["shards"]] == [2, 1]
    assert open_shards(shards.path, model).index == shards.index
    tracks = list(iter_tracks(open_sources(shards.path), model))
    assert [t.name for t in tracks] == list(TRACKS)
    # The bytes in a shard are the bytes `walloc-audio encode` writes for the same stem file.
    wav = root / "train" / "Alpha - One" / "drums.wav"
    compress_file(str(wav), str(tmp_path / "drums.wlc"), model)
    data = (tmp_path / "drums.wlc").read_bytes()
    with tarfile.open(shards.files[0]) as tar:
        assert tar.extractfile("t00000.drums.wlc").read() == data
    z, n = read_latents(data, model)
    assert n == round(1.5 * 44100) and z.shape[0] == model.config.latent_dim
    np.testing.assert_array_equal(tracks[0].latents["drums"], z)
    # Dequantized latents are the float analysis up to the codec's quantization error.
    x = torch.from_numpy(sf.read(str(wav), dtype="float32", always_2d=True)[0].T.copy())
    x = torch.nn.functional.pad(x, (0, (-x.shape[1]) % model.config.frame))[None]
    with torch.no_grad():
        zf = model.codec.analyze(x)[0].numpy()
    k = zf.shape[1]
    err = float(np.sum((zf - z[:, :k]) ** 2) / np.sum(zf**2))
    assert 1e-6 < err < 0.1, err


def test_local_folder_mode_reads_the_same_latents(shard_set, model, tmp_path):
    _, shards = shard_set
    ref = next(iter_tracks(open_sources(shards.path), model))
    folder = tmp_path / "local" / ref.name
    folder.mkdir(parents=True)
    with tarfile.open(shards.files[0]) as tar:
        for row in ROWS:
            (folder / f"{row}.wlc").write_bytes(tar.extractfile(f"t00000.{row}.wlc").read())
    (local,) = iter_tracks(open_sources(tmp_path / "local"), model)
    assert local.name == ref.name
    for row in ROWS:
        np.testing.assert_array_equal(local.latents[row], ref.latents[row])


def test_corrupt_and_truncated_shards_are_skipped_and_counted(shard_set, model, tmp_path):
    _, shards = shard_set
    good = shards.files[1].read_bytes()
    # A .wlc member with garbage in its packets: that track is dropped, the others read.
    out = io.BytesIO()
    with tarfile.open(shards.files[0]) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "t00000.bass.wlc":
                data = data[:200] + bytes(b ^ 0x5A for b in data[200:260]) + data[260:]
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    (tmp_path / "a.tar").write_bytes(out.getvalue())
    (tmp_path / "b.tar").write_bytes(good[: len(good) // 2])  # cut mid-member
    (tmp_path / "c.tar").write_bytes(b"not a tar at all" * 64)
    skips = Skips()
    names = [t.name for t in iter_tracks(open_sources(tmp_path), model, skips=skips)]
    assert names == ["Beta - Two"]
    whats = [s["what"] for s in skips.items]
    assert "Alpha - One" in whats and len(skips) >= 3, skips.items
    # The training stream goes on past them and reports the count.
    ds = ShardRemixStream(open_sources(tmp_path), model, 16, samples_per_epoch=4)
    assert len(list(ds)) == 4 and len(ds.skips) >= 3


def test_a_wlc_of_another_codec_is_an_error(model, tmp_path):
    other = load_model("stereo-5x")
    data = encode_array(np.zeros((2, 4410), np.float32), other)
    with pytest.raises(DatasetError, match="stereo-5x"):
        read_latents(data, model)
    with pytest.raises(DatasetError):
        open_shards(tmp_path / "none", model)


def test_quantized_remixing_gap_and_stream_items(shard_set, model):
    _, shards = shard_set
    tracks = list(iter_tracks(open_sources(shards.path), model))
    gap = remix_gap(tracks)
    # The coded mixture is not the sum of the coded stems, but close (quantization noise only).
    assert all(-60 < t["gap_db"] < -5 for t in gap["tracks"]), gap
    remix = ShardRemixStream(open_sources(shards.path), model, 32, samples_per_epoch=6, seed=1)
    items = list(remix)
    assert len(items) == 6
    for mix, stems in items:
        assert mix.shape == (model.config.latent_dim, 32) and stems.shape == (4, model.config.latent_dim, 32)
        torch.testing.assert_close(mix, stems.sum(0))
    coded = ShardRemixStream(open_sources(shards.path), model, 32, samples_per_epoch=6, seed=1, mixture_prob=1.0)
    for mix, stems in coded:
        assert not torch.allclose(mix, stems.sum(0))  # the coded mixture itself
        assert float(torch.sum((mix - stems.sum(0)) ** 2)) < 0.5 * float(torch.sum(mix**2)) + 1e-9
    # Same seed and epoch, same items; another epoch, other items.
    again = list(ShardRemixStream(open_sources(shards.path), model, 32, samples_per_epoch=6, seed=1))
    torch.testing.assert_close(items[0][0], again[0][0])


def test_workers_share_the_shards_and_the_epoch(shard_set, model):
    _, shards = shard_set
    ds = ShardRemixStream(open_sources(shards.path), model, 16, samples_per_epoch=10)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    items = list(loader)
    assert len(items) == 10  # 5 per worker, each from its own shard
