"""`walloc-audio separate` and shipped separators: from a .wlc without decoding the mixture, from audio, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from separation.data import STEMS
from separation.models import LatentSeparator, WallocFrontEnd
from separation.inference import TDCNSeparator, UnsupportedNetwork
from separation.separator import ChunkedMasker, load_separator, save_separator, separate_file
from separation.shards import read_latents
from walloc_audio.cli import run
from walloc_audio.compress import compress_file, decompress_file
from walloc_audio.errors import BitstreamError, ModelError
from walloc_audio.pretrained import load_model

from helpers import stem_signals

SMALL = {"n_blocks": 2, "n_repeats": 1, "bn_chan": 16, "hid_chan": 32, "skip_chan": 16}


@pytest.fixture(scope="module")
def codec():
    return load_model("stereo-5x-linear")


@pytest.fixture(scope="module")
def separator_file(tmp_path_factory, codec):
    torch.manual_seed(0)
    net = LatentSeparator(codec.config.latent_dim, 4, scale=0.3, **SMALL)
    path = tmp_path_factory.mktemp("sep") / "tiny.safetensors"
    save_separator(path, net, codec, {"note": "untrained, for tests"})
    return path


@pytest.fixture(scope="module")
def song(tmp_path_factory, codec):
    folder = tmp_path_factory.mktemp("song")
    x = sum(stem_signals(2.3, seed=3).values())
    sf.write(folder / "song.wav", x, 44100, subtype="PCM_16")
    compress_file(str(folder / "song.wav"), str(folder / "song.wlc"), codec)
    return folder


def test_chunked_masker_equals_one_pass_for_a_local_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(6, 8, 5, padding=2), torch.nn.Tanh(), torch.nn.Conv1d(8, 12, 3, padding=1),
                              torch.nn.Unflatten(1, (2, 6)))
    z = np.random.default_rng(0).standard_normal((6, 1000)).astype(np.float32)
    with torch.no_grad():
        whole = net(torch.from_numpy(z)[None])[0].numpy()
    def run_net(x):
        with torch.no_grad():
            return net(torch.from_numpy(x)[None])[0].numpy()
    m = ChunkedMasker(run_net, 6, chunk=128, context=8)
    pieces = []
    for i in range(0, 1000, 77):  # packets of any size
        pieces += list(m.push(z[:, i : i + 77]))
    pieces += list(m.flush())
    out = np.concatenate(pieces, axis=2)
    assert out.shape == whole.shape
    np.testing.assert_allclose(out, whole, atol=1e-5)


def _perturbed(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter away from its initial value (gLN gains/biases, PReLU slopes), as training leaves them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return net.eval()


@pytest.mark.parametrize("kw", [{}, {"output": "map", "mask_act": "relu"}, {"mask_act": "sigmoid", "skip_chan": 0},
                                {"mask_act": "softmax", "conv_kernel_size": 5, "n_blocks": 3},
                                {"consistency": True}])
def test_the_numpy_separator_equals_the_torch_model(kw):
    """separation.inference runs asteroid's TDConvNet (through LatentSeparator) to float32 rounding."""
    torch.manual_seed(0)
    net = _perturbed(LatentSeparator(12, 4, scale=0.3, **{**SMALL, **kw}), 1)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    npnet = TDCNSeparator(net.config, state)
    z = 0.5 * np.random.default_rng(2).standard_normal((12, 333)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(z)[None])[0].numpy()
    out = npnet(z)
    assert out.shape == ref.shape == (4, 12, 333) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    if kw.get("consistency"):  # the estimates add up to the mixture
        np.testing.assert_allclose(out.sum(0), z, rtol=1e-4, atol=1e-5)


def test_the_numpy_separator_checks_every_tensor():
    net = LatentSeparator(12, 4, scale=0.3, **SMALL)
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match="missing tensor masker.TCN.1.res_conv.bias"):
        TDCNSeparator(net.config, {k: v for k, v in state.items() if k != "masker.TCN.1.res_conv.bias"})
    with pytest.raises(ValueError, match="unexpected tensor"):
        TDCNSeparator(net.config, {**state, "masker.TCN.9.res_conv.bias": state["masker.TCN.1.res_conv.bias"]})
    with pytest.raises(ValueError, match="shape"):
        TDCNSeparator({**net.config, "hid_chan": 24}, state)
    with pytest.raises(ValueError, match="scale"):
        TDCNSeparator(net.config, {**state, "scale": np.array(-1.0, np.float32)})
    with pytest.raises(UnsupportedNetwork):
        TDCNSeparator({**net.config, "masker": "dprnn"}, state)
    with pytest.raises(ValueError, match="non-finite"):
        TDCNSeparator(net.config, {**state, "masker.TCN.0.res_conv.bias": np.full(16, np.nan, np.float32)})
    for sizes in ({"n_blocks": 10**9}, {"n_blocks": 40}, {"n_repeats": 0}, {"hid_chan": 0}):
        with pytest.raises(ValueError, match="implausible"):  # before any loop or allocation follows them
            TDCNSeparator({**net.config, **sizes}, state)
    with pytest.raises(ValueError, match=r"\[12, K\]"):
        TDCNSeparator(net.config, state)(np.zeros((11, 5), np.float32))


def test_a_dprnn_separator_runs_through_torch(codec, tmp_path):
    torch.manual_seed(0)
    net = _perturbed(LatentSeparator(codec.config.latent_dim, 4, masker="dprnn", bn_chan=16, hid_size=16,
                                     chunk_size=20, n_repeats=1), 3)
    save_separator(tmp_path / "dprnn.safetensors", net, codec)
    sep = load_separator(str(tmp_path / "dprnn.safetensors"))
    assert not isinstance(sep.net, TDCNSeparator)
    z = np.random.default_rng(0).standard_normal((codec.config.latent_dim, 90)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(z)[None])[0].numpy()
    np.testing.assert_allclose(sep.net(z), ref, rtol=1e-5, atol=1e-6)


def test_separate_a_wlc_matches_offline_separation_and_never_decodes_the_mixture(song, separator_file, codec,
                                                                                 tmp_path, monkeypatch):
    sep = load_separator(str(separator_file))
    assert sep.codec.sha256 == codec.sha256 and sep.info["extra"]["note"].startswith("untrained")
    import walloc_audio.codec_stream as cs

    def no_synthesis(*a, **k):
        raise AssertionError("the mixture was synthesised")
    monkeypatch.setattr(cs.PacketDecoder, "decode_many", no_synthesis)
    st = separate_file(str(song / "song.wlc"), tmp_path, sep, chunk_frames=100000)
    assert st.seconds_audio == pytest.approx(2.3, abs=1e-3)
    outs = {s: sf.read(tmp_path / "song" / f"{s}.wav", dtype="float32", always_2d=True) for s in STEMS}
    frames = sf.info(song / "song.wav").frames
    assert all(r == 44100 and x.shape == (frames, 2) for x, r in outs.values())
    # Offline: all latents at once through the separator and the codec's linear decoder.
    z, n = read_latents((song / "song.wlc").read_bytes(), codec)
    est = torch.from_numpy(sep.net(z))[None]
    ref = WallocFrontEnd(codec).decode(est, n)[0].numpy()  # [S, C, T]
    for i, s in enumerate(STEMS):
        np.testing.assert_allclose(outs[s][0].T, np.clip(ref[i], -1, 1), atol=2e-4)  # PCM_16 rounding


def test_separate_audio_codes_it_first_as_encode_would(song, separator_file, tmp_path):
    sep = load_separator(str(separator_file))
    separate_file(str(song / "song.wav"), tmp_path / "a", sep)
    separate_file(str(song / "song.wlc"), tmp_path / "b", sep)
    for s in STEMS:
        a, b = (sf.read(tmp_path / d / "song" / f"{s}.wav")[0] for d in ("a", "b"))
        np.testing.assert_array_equal(a, b)


def test_stems_as_wlc_and_mono_48k_input(song, separator_file, tmp_path):
    sep = load_separator(str(separator_file))
    separate_file(str(song / "song.wlc"), tmp_path, sep, wlc=True)
    decompress_file(str(tmp_path / "song" / "vocals.wlc"), str(tmp_path / "vocals.wav"))
    assert sf.info(tmp_path / "vocals.wav").frames == sf.info(song / "song.wav").frames
    mono = tmp_path / "mono48.flac"
    t = np.arange(48000 * 2) / 48000
    sf.write(mono, 0.3 * np.sin(2 * np.pi * 330 * t), 48000)
    separate_file(str(mono), tmp_path / "m", sep, fmt="flac")
    info = sf.info(tmp_path / "m" / "mono48" / "bass.flac")
    assert (info.samplerate, info.channels, info.frames) == (48000, 1, 96000)


def test_bad_input_is_refused_and_leaves_no_output(song, separator_file, codec, tmp_path):
    sep = load_separator(str(separator_file))
    compress_file(str(song / "song.wav"), str(tmp_path / "other.wlc"), load_model("stereo-5x"))
    with pytest.raises(ModelError, match="stereo-5x-linear"):
        separate_file(str(tmp_path / "other.wlc"), tmp_path / "out", sep)
    data = (song / "song.wlc").read_bytes()
    (tmp_path / "cut.wlc").write_bytes(data[: len(data) // 2])
    with pytest.raises(BitstreamError):
        separate_file(str(tmp_path / "cut.wlc"), tmp_path / "out", sep)
    assert not any((tmp_path / "out").rglob("*.wav"))
    # Separator files that do not match what they claim.
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b"x" * 40)
    with pytest.raises(ModelError):
        load_separator(str(tmp_path / "junk.safetensors"))
    torch.manual_seed(0)
    bigger = LatentSeparator(codec.config.latent_dim, 4, **{**SMALL, "bn_chan": 24})
    save_separator(tmp_path / "mismatch.safetensors", bigger, codec)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(tmp_path / "mismatch.safetensors"), "pt") as f:
        meta = f.metadata()
    meta["net"] = meta["net"].replace('"bn_chan": 24', '"bn_chan": 16')
    save_file(load_file(str(tmp_path / "mismatch.safetensors")), str(tmp_path / "mismatch.safetensors"), metadata=meta)
    with pytest.raises(ModelError, match="do not match"):
        load_separator(str(tmp_path / "mismatch.safetensors"))
    with pytest.raises(ModelError, match="not installed"):
        load_separator("no-such-separator")
    save_separator(tmp_path / "three.safetensors", LatentSeparator(codec.config.latent_dim, 3, **SMALL), codec)
    with pytest.raises(ModelError, match="3 stems"):
        load_separator(str(tmp_path / "three.safetensors"))


def test_cli_separate(song, separator_file, tmp_path, capsys):
    assert run(["separate", str(song / "song.wlc"), "-o", str(tmp_path), "-s", str(separator_file), "-t", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "song").iterdir()) == sorted(f"{s}.wav" for s in STEMS)
    assert "real time" in capsys.readouterr().err
    # Existing stems are not replaced without -f; a usage error is one line, exit 2.
    assert run(["separate", str(song / "song.wlc"), "-o", str(tmp_path), "-s", str(separator_file)]) == 6
    assert run(["separate", str(song / "song.wlc"), "-o", str(tmp_path), "--format", "wlc"]) == 2
    assert "exists" in capsys.readouterr().err
