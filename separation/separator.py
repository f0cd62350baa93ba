"""Shipped separators and ``walloc-audio separate``: stems from a ``.wlc`` without decoding the mixture.

A separator is one safetensors file in ``walloc_audio/models/separators/``
(or in ``separators/`` of a ``WALLOC_AUDIO_MODELS`` folder, or a folder of
``WALLOC_AUDIO_SEPARATORS``): the latent masker's weights, and
in the file's metadata what builds it and the codec it was trained on (name and
weights sha256). It only ever runs on latents of that codec: a ``.wlc`` of
another codec, or a separator whose metadata does not match its weights, is
refused with one line.

Separating a ``.wlc``: packets are range-decoded and dequantized into the
decoder's input latents (the mixture is never synthesised), the masker runs on
chunks of ``chunk_frames`` latent frames with ``context_frames`` either side
(memory stays bounded on a file of any length), and each stem's latents are
synthesised by the codec's linear decoder into an audio file -- or, with
``wlc=True``, coded as a ``.wlc`` of its own. Separating audio: it is first
coded in memory exactly as ``walloc-audio encode`` would (the separator sees
what a ``.wlc`` holds, never the PCM).

Running a separator needs neither torch nor asteroid: a TDConvNet separator
runs in numpy (:mod:`separation.inference`), so ``separate`` works on the lean
install. Other maskers (DPRNN) run through the torch model and need the
``[separation]`` extra; saving a separator (training) always does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from walloc_audio.errors import ModelError, WallocError
from walloc_audio.pretrained import (PACKAGE_MODELS, SEPARATORS, LoadedModel, list_separators, load_model,
                                    safetensors_metadata, separator_folders)

from . import STEMS
from .inference import TDCNSeparator, UnsupportedNetwork

SEPARATOR_FORMAT = "walloc-separator"
SEPARATOR_VERSION = 1
PACKAGE_SEPARATORS = PACKAGE_MODELS / SEPARATORS
DEFAULT_SEPARATOR = "tdcn-stereo-5x-linear"


def save_separator(path: str | os.PathLike, net, codec: LoadedModel, extra: dict | None = None) -> None:
    """Write a latent separator and what binds it to its codec into one safetensors file."""
    from safetensors.torch import save_file

    meta = {"format": SEPARATOR_FORMAT, "version": str(SEPARATOR_VERSION), "codec": codec.name,
            "codec_sha256": codec.sha256, "net": json.dumps(net.config), "stems": json.dumps(list(STEMS)),
            "extra": json.dumps(extra or {})}
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, os.fspath(path), metadata=meta)


@dataclass
class Separator:
    name: str
    path: Path
    net: object
    codec: LoadedModel
    info: dict


def find_separator(name: str) -> Path:
    """A separator file by name (the first registry folder that has it) or by path."""
    if os.sep in name or name.endswith(".safetensors"):
        return Path(name)
    if not name or name.startswith("."):
        raise ModelError(f"invalid separator name {name!r}")
    for folder in separator_folders():
        if (folder / f"{name}.safetensors").is_file():
            return folder / f"{name}.safetensors"
    known = ", ".join(sorted(s["name"] for s in list_separators())) or "none"
    raise ModelError(f"separator {name!r} is not installed (installed: {known})")


def load_separator(name: str = DEFAULT_SEPARATOR) -> Separator:
    """Load a separator and the codec it names (checked by sha256).

    ``Separator.net`` maps a latent mixture ``[L, K]`` (numpy) to its stems'
    latents ``[S, L, K]``: the numpy TDConvNet, or for other maskers the torch
    model behind the same call."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = find_separator(name)
    try:
        meta = safetensors_metadata(path)
        if meta.get("format") != SEPARATOR_FORMAT or meta.get("version") != str(SEPARATOR_VERSION):
            raise ValueError(f"not a version-{SEPARATOR_VERSION} {SEPARATOR_FORMAT} file")
        config = json.loads(meta["net"])
        stems = json.loads(meta["stems"])
        if tuple(stems) != STEMS:
            raise ValueError(f"stems {stems} are not {list(STEMS)}")
        if not isinstance(config, dict):
            raise ValueError("its net metadata is not an object")
        state = load_file(str(path))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise ModelError(f"{path}: not a usable separator ({exc})") from None
    codec = load_model(meta["codec"], expected_sha256=meta["codec_sha256"])
    if config.get("n_src") != len(STEMS):
        raise ModelError(f"{path}: separates into {config.get('n_src')} stems, not the {len(STEMS)} it names")
    if config.get("latent_dim") != codec.config.latent_dim:
        raise ModelError(f"{path}: built for {config.get('latent_dim')} latents, {codec.name} has "
                         f"{codec.config.latent_dim}")
    try:
        try:
            net = TDCNSeparator(config, state)
        except UnsupportedNetwork:
            net = _TorchNet(config, state)
    except (RuntimeError, TypeError, ValueError, KeyError, AssertionError) as exc:
        raise ModelError(f"{path}: weights do not match the network its metadata describes ({exc})") from None
    return Separator(path.stem, path, net, codec, {**meta, "extra": json.loads(meta.get("extra", "{}"))})


class TorchMasker:
    """A torch latent separator as the numpy callable :class:`ChunkedMasker` runs: ``[L, n] -> [S, L, n]``."""

    def __init__(self, module):
        self.module = module.eval()

    def __call__(self, z: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(z, np.float32))[None])[0].numpy()


class _TorchNet(TorchMasker):
    """A separator the numpy path does not run (e.g. DPRNN), through :class:`separation.models.LatentSeparator`."""

    def __init__(self, config: dict, state: dict):
        import torch

        from .models import LatentSeparator

        kw = {k: v for k, v in config.items() if k not in ("latent_dim", "n_src")}
        module = LatentSeparator(config["latent_dim"], config["n_src"], **kw)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        super().__init__(module)
        self.config = config


# ----------------------------------------------------------------------- inference


class ChunkedMasker:
    """Runs the masker on a stream of latent frames in chunks with context; yields ``[S, L, n]`` pieces.

    ``net`` maps latents ``[L, m]`` to ``[S, L, m]`` (numpy arrays).

    Each chunk of ``chunk`` frames is processed with up to ``context`` real
    frames of the stream on either side (none before the start or after the
    end, as one pass over the whole stream sees it), and only its own frames
    are kept: memory is bounded by ``chunk + 2 * context`` frames. A network
    whose receptive field fits in the context gives exactly the one-pass
    output; a globally normalised one (gLN) normalises per chunk, as it did
    on training crops.
    """

    def __init__(self, net, latent_dim: int, chunk: int = 4096, context: int = 256):
        self.net, self.chunk, self.context = net, chunk, context
        self._buf = np.zeros((latent_dim, 0), np.float32)
        self._start = 0  # index in _buf of the first frame not yet output

    def _run(self, n: int) -> np.ndarray:
        y = self.net(np.ascontiguousarray(self._buf[:, : self._start + n + self.context]))
        out = y[:, :, self._start : self._start + n]
        keep = max(0, self._start + n - self.context)
        self._buf, self._start = self._buf[:, keep:], self._start + n - keep
        return out

    def push(self, z: np.ndarray) -> Iterator[np.ndarray]:
        self._buf = np.concatenate([self._buf, np.asarray(z, np.float32)], axis=1)
        while self._buf.shape[1] - self._start >= self.chunk + self.context:
            yield self._run(self.chunk)

    def flush(self) -> Iterator[np.ndarray]:
        while self._buf.shape[1] > self._start:
            yield self._run(min(self.chunk, self._buf.shape[1] - self._start))


def _coded_latents(src: str, codec: LoadedModel, block_frames: int = 1 << 16):
    """``(header, iterator of dequantized latents [L, n], end info)`` of a ``.wlc`` or of audio coded in memory."""
    from walloc_audio.bitstream import BitstreamReader
    from walloc_audio.codec_stream import PacketDecoder

    if src.lower().endswith(".wlc"):
        try:
            f = open(src, "rb")
        except OSError as exc:
            from walloc_audio.errors import BitstreamError

            raise BitstreamError(f"cannot open {src}: {exc.strerror}") from None
        reader = BitstreamReader(io.BufferedReader(f, 1 << 20))
        h = reader.header
        if h.model != codec.name or h.model_sha256 != codec.sha256:
            f.close()
            raise ModelError(f"{src} was coded with {h.model!r} (sha256 {h.model_sha256[:12]}...); this separator "
                             f"works on {codec.name!r} (sha256 {codec.sha256[:12]}...) latents only")
        dec = PacketDecoder.for_header(codec, h)

        def gen():
            with f:
                for p in reader:
                    yield dec.latents(p.frames, p.payload)
        return h, gen(), reader
    # Audio: code it in memory as `encode` would, then read the packets back.
    from walloc_audio.audio import AudioReader
    from walloc_audio.codec_stream import PacketEncoder
    from walloc_audio.compress import channel_mode_for, map_channels, stream_header

    cfg = codec.config
    stack = contextlib.ExitStack()
    reader = stack.enter_context(AudioReader(src, sample_rate=cfg.sample_rate, block_frames=block_frames))
    mode = channel_mode_for(reader.channels, cfg.channels, False, reader.name)
    h = stream_header(codec, 64, reader.source_rate or reader.sample_rate, reader.channels, mode, 2, {})
    enc = PacketEncoder(codec, 64, 4)
    dec = PacketDecoder.for_header(codec, h)
    state = _AudioEnd()

    def gen():
        with stack:
            for block in reader:
                state.num_samples += block.shape[1]
                for frames, payload in enc.push(map_channels(block, cfg.channels, mode)):
                    yield dec.latents(frames, payload)
            if state.num_samples == 0:
                raise WallocError(f"{src}: contains no audio samples")
            for frames, payload in enc.flush():
                yield dec.latents(frames, payload)
    return h, gen(), state


class _AudioEnd:
    num_samples = 0


@dataclass
class SeparateStats:
    seconds_audio: float
    seconds: float
    outputs: list


def output_paths(src: str, out_dir: Path, fmt: str, wlc: bool) -> dict:
    base = Path(src).name
    for suffix in (".wlc", Path(base).suffix):
        if suffix and base.lower().endswith(suffix.lower()):
            base = base[: -len(suffix)]
            break
    ext = ".wlc" if wlc else "." + fmt.lstrip(".")
    return {s: out_dir / base / f"{s}{ext}" for s in STEMS}


def separate_file(src: str, out_dir: Path, sep: Separator, *, fmt: str = "wav", wlc: bool = False,
                  overwrite: bool = False, progress: Callable[[float], None] | None = None,
                  chunk_frames: int = 4096, context_frames: int = 256) -> SeparateStats:
    """Separate ``src`` (``.wlc`` or audio) into ``out_dir/NAME/{drums,bass,other,vocals}.EXT``.

    All four outputs appear together or not at all (each is written to an
    unnamed temporary and linked only when every stem is complete)."""
    from walloc_audio.audio import AudioWriter
    from walloc_audio.bitstream import BitstreamWriter
    from walloc_audio.codec_stream import OutputTrim, PacketEncoder
    from walloc_audio.compress import map_channels, stream_header
    from walloc_audio.errors import OutputError
    from walloc_audio.fsutil import atomic_output
    from walloc_audio.runtime import Synthesis

    t0 = time.perf_counter()
    codec = sep.codec
    cfg = codec.config
    header, latents, end = _coded_latents(src, codec)
    paths = output_paths(src, out_dir, fmt, wlc)
    mono = header.channel_mode == "mono"
    out_channels = 1 if mono else cfg.channels
    masker = ChunkedMasker(sep.net, cfg.latent_dim, chunk_frames, context_frames)
    frames_done = 0
    with contextlib.ExitStack() as stack:
        try:
            paths[STEMS[0]].parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {paths[STEMS[0]].parent}: {exc.strerror}") from None
        tmps = {s: stack.enter_context(atomic_output(p, overwrite=overwrite, inputs=[src])) for s, p in paths.items()}
        synth = {s: Synthesis(codec.runtime) for s in STEMS}
        trims = {s: OutputTrim.for_stream(cfg, chunk_frames, out_channels) for s in STEMS}
        if wlc:
            files = {s: stack.enter_context(open(tmps[s], "wb")) for s in STEMS}
            sh = stream_header(codec, 64, header.source_sample_rate, out_channels, "mono" if mono else "native", 2,
                               {"separated_from": os.path.basename(src), "separator": sep.name})
            writers = {s: BitstreamWriter(files[s], sh) for s in STEMS}
            encoders = {s: PacketEncoder(codec, 64, 4) for s in STEMS}
        else:
            writers = {s: stack.enter_context(AudioWriter(tmps[s], cfg.sample_rate, out_channels,
                                                          out_rate=header.source_sample_rate, name=str(paths[s])))
                       for s in STEMS}

        def emit(stem: str, pcm: np.ndarray) -> None:
            if not pcm.shape[1]:
                return
            if wlc:
                for frames, payload in encoders[stem].push(map_channels(pcm, cfg.channels,
                                                                        "mono" if mono else "native")):
                    writers[stem].write(frames, payload)
            else:
                writers[stem].write(pcm)

        def consume(pieces) -> None:
            nonlocal frames_done
            for y in pieces:
                for i, s in enumerate(STEMS):
                    pcm = trims[s].align(synth[s].process(y[i]))
                    if mono:
                        pcm = pcm.mean(axis=0, keepdims=True)
                    emit(s, trims[s].release(pcm))
                frames_done += y.shape[2]
                if progress:
                    progress(y.shape[2] * cfg.frame / cfg.sample_rate)

        for z in latents:
            consume(masker.push(z))
        consume(masker.flush())
        num_samples = end.num_samples
        for s in STEMS:
            emit(s, trims[s].finish(num_samples, strict=False))
            if wlc:
                for frames, payload in encoders[s].flush():
                    writers[s].write(frames, payload)
                src_samples = round(num_samples * header.source_sample_rate / cfg.sample_rate)
                writers[s].close(num_samples, src_samples)
    seconds = (num_samples or 0) / cfg.sample_rate
    return SeparateStats(seconds, time.perf_counter() - t0, [str(p) for p in paths.values()])
