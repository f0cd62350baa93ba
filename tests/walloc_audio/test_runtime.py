"""The numpy runtime against the torch model, and the torch-free command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_model, tones
from walloc_audio.audio import read_audio
from walloc_audio.codec_stream import PacketDecoder, PacketEncoder
from walloc_audio.config import CodecConfig
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.errors import ModelError
from walloc_audio.tools.model import WallocCodec
from walloc_audio.pretrained import load_model
from walloc_audio.runtime import weight_shapes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kw", [{}, dict(decoder_width=8, decoder_depth=3), dict(post_filter_taps=5),
                                dict(decoder_width=4, decoder_depth=1, lookahead_frames=2, entropy="context")])
def test_weight_shapes_are_the_torch_state_dict(kw):
    cfg = CodecConfig(J=3, latent_dim=6, **kw)
    assert weight_shapes(cfg) == {k: tuple(v.shape) for k, v in WallocCodec(cfg).state_dict().items()}


@pytest.fixture(scope="module")
def music():
    x, _ = read_audio(DEMO_CLIP)
    return np.ascontiguousarray(x[:, : 4 * 44100 // 256 * 256], dtype=np.float32)


@pytest.mark.parametrize("name", ["stereo-5x", "stereo-5x-linear", "stereo-5x-ll"])
def test_runtime_and_torch_give_the_same_symbols_and_audio(name, music):
    m = load_model(name)
    rt, codec = m.runtime, m.codec
    z = rt.analyze(music)
    with torch.no_grad():
        zt = codec.analyze(torch.from_numpy(music)[None])[0]
        qt = codec.bottleneck.symbols(zt).numpy()
        yt = codec.synthesize(codec.bottleneck.dequantize(torch.from_numpy(qt))[None])[0].numpy()
    np.testing.assert_allclose(z, zt.numpy(), atol=1e-4 * float(np.abs(z).max()))
    q = rt.quantizer.symbols(z)
    assert (q == qt).mean() >= 0.9999, f"{int((q != qt).sum())} of {q.size} symbols differ"
    assert np.abs(q - qt).max() <= 1  # only bin-edge ties
    y = rt.synthesize(rt.quantizer.dequantize(qt))
    np.testing.assert_allclose(y, yt, atol=1e-5)


def test_a_v2_file_decodes_the_same_through_torch(music):
    """The packet decoder (numpy) and the torch decoder on the same dequantized latents and gains."""
    m = load_model("stereo-5x")
    enc = PacketEncoder(m, 64, 4)
    packets = enc.push(music * 0.05) + enc.flush()  # quiet: the step and the gain move off the model's own
    dec = PacketDecoder(m, 2, enc.bands)
    zs, gains = [], []
    for f, p in packets:
        zs.append(dec.latents(f, p))
        gains.append(np.full(f, dec._gain, dtype=np.float32))
    assert min(g[0] for g in gains) < 0.5
    z, g = np.concatenate(zs, axis=1), np.concatenate(gains)
    y = np.concatenate(PacketDecoder(m, 2, enc.bands).decode_many(packets), axis=1)
    codec = m.codec
    with torch.no_grad():
        coef = codec.decoder(torch.from_numpy(z)[None], torch.from_numpy(g)[None, None])  # [1, C*P, K]
        frames = coef.reshape(2, codec.config.frame, -1).permute(2, 0, 1).contiguous()
        from walloc_audio.tools.framefir import FrameFIR
        from walloc_audio.wavelets import signal_from_frames

        yt = signal_from_frames(FrameFIR(codec._syn).process(frames), 1)[:, 0].numpy()
    np.testing.assert_allclose(y, yt, atol=1e-5)


def test_lookahead_net_streams_in_any_partition():
    m = make_model(J=3, depth=2, lookahead=2)
    x = tones(0.1)
    enc = PacketEncoder(m, 3)
    packets = enc.push(x) + enc.flush()
    whole = np.concatenate(PacketDecoder(m).decode_many(packets), axis=1)
    one = PacketDecoder(m)
    pieces = np.concatenate([one.decode(f, p) for f, p in packets], axis=1)
    np.testing.assert_allclose(pieces, whole, atol=1e-6)


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    import hashlib
    import json
    import shutil

    from walloc_audio.pretrained import PACKAGE_MODELS

    src = PACKAGE_MODELS / "stereo-5x-ll-linear.json"
    info = json.loads(src.read_text())
    info["config"]["latent_dim"] = 26
    info["name"] = "bad"
    shutil.copy(src.with_suffix(".safetensors"), tmp_path / "bad.safetensors")
    info["sha256"] = hashlib.sha256((tmp_path / "bad.safetensors").read_bytes()).hexdigest()
    info.pop("v2", None)
    (tmp_path / "bad.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="do not match its config"):
        load_model("bad", folder=tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    info["sha256"] = hashlib.sha256((tmp_path / "bad.safetensors").read_bytes()).hexdigest()
    (tmp_path / "bad.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="not valid safetensors"):
        load_model("bad", folder=tmp_path)


# A lean install has no torch: simulate it by making `import torch` fail in a child process.
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "pytorch_lightning", "lightning", "pywt"):
            raise ModuleNotFoundError(f"No module named {name!r} (lean install)", name=name)
sys.meta_path.insert(0, _NoTorch())
"""


def _lean(tmp_path: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    site = tmp_path / "lean-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCK_TORCH)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "walloc_audio", *args], capture_output=True, env=env,
                          input=stdin, timeout=120, cwd=tmp_path)


def test_the_codec_commands_run_without_torch(tmp_path):
    src = tmp_path / "in.flac"
    import soundfile as sf

    sf.write(src, tones(2.0).T, 44100)
    for args in (["encode", str(src), str(tmp_path / "a.wlc")], ["encode", "-b", "24", str(src), str(tmp_path / "b.wlc")],
                 ["info", str(tmp_path / "a.wlc")], ["decode", str(tmp_path / "a.wlc"), str(tmp_path / "a.wav")],
                 ["models"], ["--help"]):
        r = _lean(tmp_path, *args)
        assert r.returncode == 0, (args, r.stderr.decode()[-2000:])
        assert b"Traceback" not in r.stderr
    y, _ = read_audio(tmp_path / "a.wav")
    x, _ = read_audio(src)
    assert y.shape == x.shape and 10 * np.log10((x**2).sum() / ((x - y) ** 2).sum()) > 10
    # stdin -> stdout works too
    r = _lean(tmp_path, "decode", "-", "-", "-f", stdin=(tmp_path / "a.wlc").read_bytes())
    assert r.returncode == 0 and r.stdout[:4] == b"RIFF", r.stderr.decode()[-2000:]


def test_a_training_command_on_a_lean_install_names_the_extra(tmp_path):
    src = tmp_path / "in.wav"
    import soundfile as sf

    sf.write(src, tones(1.0).T, 44100)
    r = _lean(tmp_path, "eval", str(src), "--no-opus")
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "walloc-audio[train]" in lines[0], r.stderr.decode()[-2000:]


def test_separate_runs_without_torch(tmp_path):
    """The shipped (TDConvNet) separator runs in numpy: `separate` works on a lean install, from audio and .wlc."""
    import soundfile as sf

    sf.write(tmp_path / "in.wav", tones(2.0).T, 44100)
    for src in ("in.wav", "in.wlc"):
        if src.endswith(".wlc"):
            assert _lean(tmp_path, "encode", "in.wav", "in.wlc").returncode == 0
        r = _lean(tmp_path, "separate", src, "-o", "stems", "-t", "1", "-f")
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode()[-2000:]
        assert sorted(p.name for p in (tmp_path / "stems" / "in").iterdir()) == \
            ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    stems = [read_audio(tmp_path / "stems" / "in" / f"{s}.wav")[0] for s in ("drums", "bass", "other", "vocals")]
    assert all(y.shape == (2, 88200) for y in stems)


LEAN_BIN = os.environ.get("WALLOC_LEAN_BIN")


@pytest.mark.skipif(not LEAN_BIN, reason="`make test` sets WALLOC_LEAN_BIN to the lean virtualenv")
def test_the_lean_virtualenv_codes_audio(tmp_path):
    """The real lean install (requirements/lean.txt): no torch in it, and the codec commands (and `separate`) work."""
    py = Path(LEAN_BIN) / "python"
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    import soundfile as sf

    sf.write(tmp_path / "in.flac", tones(2.0).T, 44100)
    exe = str(Path(LEAN_BIN) / "walloc-audio")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WALLOC_AUDIO_MODELS")}
    for args in (["encode", "in.flac", "a.wlc"], ["info", "--json", "a.wlc"], ["decode", "a.wlc", "a.wav"],
                 ["separate", "a.wlc", "-o", "stems", "-t", "1"], ["--version"]):
        r = subprocess.run([exe, *args], capture_output=True, cwd=tmp_path, env=env, timeout=120)
        assert r.returncode == 0, (args, r.stderr.decode()[-2000:])
    y, _ = read_audio(tmp_path / "a.wav")
    assert y.shape == (2, 88200) and read_audio(tmp_path / "stems" / "a" / "vocals.wav")[0].shape == (2, 88200)


def test_every_runtime_module_imports_without_torch():
    """The folder tree is the boundary: ``walloc_audio/*.py`` is the runtime, ``walloc_audio/tools/`` the rest."""
    runtime = sorted(p.stem for p in (ROOT / "walloc_audio").glob("*.py") if p.stem != "__main__")
    tools = sorted(p.stem for p in (ROOT / "walloc_audio" / "tools").glob("*.py") if p.stem != "__init__")
    assert {"lifting", "runtime", "codec_stream", "cli"} <= set(runtime) and "model" in tools
    code = ("import importlib, sys\n"
            "for name in ('torch', 'torchaudio', 'lightning', 'pytorch_lightning', 'asteroid'):\n"
            "    sys.modules[name] = None  # any import of them raises ImportError\n"
            f"for m in {runtime!r}:\n"
            "    importlib.import_module('walloc_audio' if m == '__init__' else 'walloc_audio.' + m)\n"
            "import separation.separator, separation.inference  # `separate` runs a TDConvNet separator in numpy\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    # and the torch model is on the tooling side: importing it without torch fails
    out = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; import walloc_audio.tools.model"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "torch" in out.stderr
