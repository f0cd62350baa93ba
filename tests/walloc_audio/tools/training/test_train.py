"""Codec training on a tiny config: the loss falls, checkpoints resume, the export loads and codes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from helpers import tones
from walloc_audio.errors import WallocError


def music_like(seconds: float, seed: int) -> np.ndarray:
    """Stereo tones with a loudness envelope and noise bursts, ``[T, 2]``."""
    rng = np.random.default_rng(seed)
    x = tones(seconds, freqs=(110.0 * (seed + 1), 330.0), amp=0.2, seed=seed)
    env = np.repeat(rng.uniform(0.05, 1.0, int(seconds * 20) + 1), 44100 // 20)[: x.shape[1]]
    return (x * env).T


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    for i in range(3):
        sf.write(root / f"song{i}.flac", music_like(3.0, i), 44100)
    (root / "corrupt.flac").write_bytes(b"fLaC not really")
    sf.write(root / "mono.wav", music_like(3.0, 7)[:, 0], 44100)
    sf.write(root / "short.wav", music_like(0.5, 8), 44100)
    sf.write(root / "silent.wav", np.zeros((44100 * 3, 2), dtype=np.float32), 44100)
    val = tmp_path_factory.mktemp("val")
    sf.write(val / "v.flac", music_like(3.0, 9), 44100)
    return root, val


def tiny(data, **kw):
    from walloc_audio.tools.training.config import TrainConfig

    root, val = data
    sets = dict(name="tiny", J=4, latent_dim=16, decoder_width=16, decoder_depth=1, step=2e-3, train=str(root),
                val=str(val), crop_frames=64, batch_size=4, max_steps=40, val_every=20, val_seconds=1.0,
                lr=3e-3, encoder_lr=0.0, pca_seconds=3.0, entropy_seconds=3.0, export_val_seconds=2.0,
                min_track_seconds=1.0, warmup_steps=1)
    sets.update(kw)
    return TrainConfig.load(None, [f"{k}={v}" for k, v in sets.items()])


def train_losses(out) -> list[float]:
    rows = list(csv.DictReader(open(next((out / "logs").rglob("metrics.csv")))))
    return [float(r["nmse_db"]) for r in rows if r.get("nmse_db")]


@pytest.mark.slow
def test_training_lowers_the_loss_resumes_and_exports(data, tmp_path):
    from walloc_audio.pretrained import load_model
    from walloc_audio.tools.training.run import run

    out = tmp_path / "run"
    logs = []
    info = run(tiny(data, init="random"), out, devices=1, accelerator="cpu", log=logs.append)
    assert any("3 tracks read, 4 skipped" in m for m in logs), logs  # corrupt, mono, short, silent
    losses = train_losses(out)
    assert len(losses) >= 3 and np.mean(losses[-2:]) < losses[0] - 3.0, losses  # dB: a zero decoder starts at 0
    assert info["training"]["steps"] == 40 and (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "config.yaml").read_text().count("latent_dim: 16") == 1

    # Resume: a longer run continues from the checkpoint instead of starting over.
    info2 = run(tiny(data, init="random", max_steps=50), out, devices=1, accelerator="cpu", log=logs.append)
    assert info2["training"]["steps"] == 50

    # A re-export carries the record forward (steps from the checkpoint, time from the last export).
    info3 = run(tiny(data, init="random", max_steps=50), out, export_only=True, log=logs.append)
    assert info3["training"]["steps"] == 50 and info3["training"]["seconds"] == info2["training"]["seconds"]
    assert info3["sha256"] == info2["sha256"]
    with pytest.raises(WallocError, match="needs a checkpoint"):  # nothing trained: refuse, never export the init
        run(tiny(data, init="random"), tmp_path / "empty", export_only=True, log=logs.append)

    # Export: the registry files load (sha256 checked) and code real audio.
    folder = out / "export"
    meta = json.loads((folder / "tiny.json").read_text())
    assert meta["config"]["entropy"] == "context" and meta["validation"]["kbps"] > 0
    assert meta["validation"]["bitstream"] == 2 and meta["validation"]["fill"]  # measured as `encode` writes files
    model = load_model("tiny", expected_sha256=meta["sha256"], folder=folder)
    from walloc_audio.codec_stream import PacketDecoder, PacketEncoder

    x = music_like(1.0, 3).T.astype(np.float32)
    enc = PacketEncoder(model, 16)
    packets = enc.push(x) + enc.flush()
    assert model.adaptive is not None and enc.version == 2  # export fits the v2 entropy model too
    pcm = np.concatenate(PacketDecoder(model, enc.version, enc.bands).decode_many(packets), axis=1)
    d = model.config.delay_samples
    err = pcm[:, d : d + x.shape[1]] - x
    assert 10 * np.log10((x**2).sum() / (err**2).sum()) > 8.0


def test_pca_init_is_the_linear_codec_and_bad_data_is_refused(data, tmp_path):
    import torch

    from walloc_audio.tools.training.linear_fit import coefficient_covariance, linear_codec
    from walloc_audio.config import CodecConfig
    from walloc_audio.tools.training.data import list_tracks, load_tracks
    from walloc_audio.tools.training.run import initial_codec

    cfg = tiny(data)
    tracks = load_tracks(list_tracks(cfg.train), cfg, log=lambda m: None)
    assert len(tracks) == 3
    codec = initial_codec(cfg, tracks, log=lambda m: None)
    cov, _ = coefficient_covariance(((str(i), t[:, : int(3 * 44100)].numpy()) for i, t in enumerate(tracks)), 4, 2)
    ref = linear_codec(CodecConfig(J=4, latent_dim=16), cov, 2e-3)
    torch.testing.assert_close(codec.encoder, ref.encoder)
    x = torch.from_numpy(tones(0.2))[None, :, :8192]
    with torch.no_grad():
        torch.testing.assert_close(codec.synthesize(codec.analyze(x)), ref.synthesize(ref.analyze(x)))

    # Emphasis: the weighted PCA keeps its latents linear and, at full rank, still inverts exactly;
    # at 16 of 32 dimensions it spends more of its basis on the lifted (upper) bands.
    from walloc_audio.tools.training.linear_fit import emphasis_weights

    w = emphasis_weights(CodecConfig(J=4, latent_dim=16), 1.0, corner_hz=2000.0)
    assert w.shape == (32,) and w[0] == 1.0 and w[15] > 9.0 and np.array_equal(w[:16], w[16:])
    full = linear_codec(CodecConfig(J=4, latent_dim=32), cov, 2e-3, w)
    e, d = full.encoder.detach().double().numpy(), full.decoder.linear.detach().double().numpy()
    np.testing.assert_allclose(d @ e, np.eye(32), atol=1e-5)
    lifted = linear_codec(CodecConfig(J=4, latent_dim=16), cov, 2e-3, w).decoder.linear.detach().double().numpy()
    upper = lambda m: float((m.reshape(2, 16, -1)[:, 8:] ** 2).sum() / (m**2).sum())  # noqa: E731
    assert upper(lifted * w[:, None]) > upper(ref.decoder.linear.detach().double().numpy())

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.wav").write_bytes(b"RIFF junk")
    from walloc_audio.tools.training.run import run

    with pytest.raises(WallocError, match="no usable training audio"):
        run(tiny(data, train=str(empty)), tmp_path / "r", devices=1, accelerator="cpu", log=lambda m: None)
    with pytest.raises(WallocError, match="unknown training config keys"):
        tiny(data, bogus=1)
    with pytest.raises(WallocError, match="crop_frames=16 leaves nothing to train on"):
        run(tiny(data, decoder_depth=4, crop_frames=16), tmp_path / "r2", devices=1, accelerator="cpu",
            log=lambda m: None)


def test_crops_have_random_gains_and_remix_stems(data, tmp_path):
    import torch

    from helpers import make_musdb
    from walloc_audio.tools.training.data import CropDataset, list_tracks, load_stems, load_tracks

    make_musdb(tmp_path, {"A - One": 2.0, "B - Two": 2.0})
    cfg = tiny(data, stems=str(tmp_path), stem_mix_probability=1.0, gain_db=[-20.0, 0.0])
    stems = load_stems(cfg.stems, cfg, log=lambda m: None)
    assert len(stems) == 2 and stems[0].shape[:2] == (4, 2)
    tracks = load_tracks(list_tracks(cfg.train), cfg, log=lambda m: None)
    ds = CropDataset(tracks, cfg, 64, stems)
    crops = torch.stack([ds[i] for i in range(64)])
    assert crops.shape == (64, 2, cfg.crop_frames * 16)
    peaks = crops.abs().amax(dim=(1, 2))
    assert peaks.max() <= 1.0 and peaks.min() < 0.3 and peaks.max() > 0.7  # gains from -20 to 0 dB of full scale
    assert torch.equal(ds[5], ds[5]) and not torch.equal(ds[5], ds[6])  # an index is a seed
    # Remixed crops are sums of stems from several tracks, not crops of a training track.
    plain = CropDataset(tracks, tiny(data), 8)
    assert not any(torch.allclose(ds[i] / ds[i].abs().max(), plain[i] / plain[i].abs().max()) for i in range(8))
