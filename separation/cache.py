"""Latent cache: every MUSDB stem encoded once into WaLLoC float latents.

Training a separator on latents reads crops of them millions of times; encoding
audio each time would cost more than the separator. So each stem of each track
goes through ``analyze`` (the linear WPT + encoder, before companding) once, and
the float latents are stored as memory-mappable ``.npy`` shards that any number
of DataLoader workers -- on any number of machines -- read without loading.

Layout (``out_dir/``)::

    index.json          format, version, model name + weights sha256 + config,
                        dtype, stems, source, shards, and per track: name, shard,
                        frame offset, frames, samples
    shard-00000.npy     [R, K_shard, L]: R = stems (+ 1 mixture row last when
                        built with include_mixture), frames, latents

Track ``t`` is ``shard[:, offset:offset + frames]``; a track never straddles two
shards, and a crop of one stem is one contiguous read. Shards close when they
reach ``shard_frames``, so building holds at most one shard plus one track.

Frames and timing. A track of ``T`` samples is padded with zeros to whole
frames and followed by ``flush_frames`` frames of silence, so it has
``K = ceil(T / 2**J) + flush_frames`` latent frames: decoding them returns the
whole track delayed by ``config.delay_samples``. Each stem is encoded with zero
history (silence before the track) in chunks of ``chunk_frames`` frames through
the stateful analysis filter, the same result as one call at any length, so
memory does not grow with the track (.stem.mp4 is the exception: musdb decodes
a whole stem, ~10 MB per minute, before it is encoded).

Storage. float16 by default: per frame ``S * L * 2`` bytes against
``S * C * 2**J * 2`` for 16-bit PCM stems, a ratio of ``C * 2**J / L`` -- the
codec's dimension reduction (4.74x for ``stereo-5x``; float32 would halve it
to 2.37x). float16 rounds each latent to 11 significant bits: ~2e-4 relative
error, against ~1e-7 for float32 (:func:`cache_stats` and the tests measure it).
Nothing is clipped: clipping would break linearity.

Mixtures are not stored: ``analyze`` is linear, so the mixture latent is the
sum of the stem latents (the set's ``linear_mixture``). ``include_mixture``
stores the latent of the set's own mixture file as well, for evaluation.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch

from walloc_audio import __version__
from walloc_audio.tools.framefir import FrameFIR
from walloc_audio.pretrained import LoadedModel
from walloc_audio.wavelets import frames_from_signal

from .data import STEMS, DatasetError, open_musdb, stem_path

CACHE_FORMAT = "walloc-latent-cache"
CACHE_VERSION = 1
INDEX = "index.json"
DEFAULT_SHARD_FRAMES = 1 << 16  # ~6.3 min of 44.1 kHz audio at J=8; 57 MB of float16 for 4 stems, L=108
DEFAULT_CHUNK_FRAMES = 4096     # ~24 s of audio per analysis call


@dataclass(frozen=True)
class CachedTrack:
    name: str
    shard: int
    offset: int
    frames: int   # latent frames, flush included
    samples: int  # audio samples per stem


class LatentCache:
    """A built cache, opened read-only by :func:`open_cache`. Shards open lazily as memmaps
    (and are dropped when pickled, so DataLoader workers map them themselves)."""

    def __init__(self, path: Path, index: dict, model: LoadedModel):
        self.path, self.index = path, index
        self.stems: tuple[str, ...] = tuple(index["stems"])
        self.has_mixture: bool = index["include_mixture"]
        self.dtype = np.dtype(index["dtype"])
        self.config = model.config
        self.tracks = [CachedTrack(**t) for t in index["tracks"]]
        self.shard_files = [path / s["file"] for s in index["shards"]]
        self._shards: list[np.ndarray | None] = [None] * len(self.shard_files)
        # Channel swap as a map on latents: z = E w -> E P w ~= E P E^+ z (exact on the span of E^+).
        e = model.codec.encoder.detach().double()
        c, p = self.config.channels, self.config.frame
        perm = torch.arange(c * p).reshape(c, p).flip(0).reshape(-1)
        self.swap_matrix = (e[:, perm] @ torch.linalg.pinv(e)).float().numpy()  # [L, L]

    def shard(self, i: int) -> np.ndarray:
        if self._shards[i] is None:
            self._shards[i] = np.load(self.shard_files[i], mmap_mode="r")
        return self._shards[i]

    def latents(self, track: int) -> np.ndarray:
        """All latents of a track, ``[R, K, L]`` (a memmap view; R = stems (+ mixture))."""
        t = self.tracks[track]
        return self.shard(t.shard)[:, t.offset : t.offset + t.frames]

    def stem_crop(self, track: int, stem: int, start: int, length: int) -> np.ndarray:
        """Frames ``[start, start + length)`` of one stem as float32 ``[length, L]``, zero past the end."""
        z = np.array(self.latents(track)[stem, start : start + length], dtype=np.float32)
        if len(z) < length:
            z = np.concatenate([z, np.zeros((length - len(z), z.shape[1]), np.float32)])
        return z

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_shards": [None] * len(self.shard_files)}


# ----------------------------------------------------------------------- encoding


def _blocks(track, stem: str, block: int) -> tuple[str, int, Iterator[np.ndarray]]:
    """``(file name, sample rate, iterator of float32 [C, n] blocks)`` for one stem
    (``"mixture"``: the set's mixture) of a wav-folder or ``.stem.mp4`` track."""
    if track.is_wav:
        path = str(track.path if stem == "mixture" else stem_path(track, stem))
        f = sf.SoundFile(path)

        def gen():
            with f:
                for b in f.blocks(block, dtype="float32", always_2d=True):
                    yield b.T
        return path, f.samplerate, gen()
    audio = track.audio if stem == "mixture" else track.sources[stem].audio  # [T, C] float64 (whole stem)
    name = f"{track.path} [{stem}]"
    return name, int(track.rate), (audio[i : i + block].T.astype(np.float32) for i in range(0, len(audio), block))


def encode_stem(blocks: Iterator[np.ndarray], fir: FrameFIR, frame: int, flush_frames: int, name: str,
                channels: int, chunk_frames: int) -> tuple[np.ndarray, int]:
    """Float latents of one signal: ``(z [K, L] float32, T samples)``, zero history, ``flush_frames``
    of silence after the end; blocks of any size are regrouped into whole frames."""
    fir.reset()
    out, pending, total = [], [], 0

    def run(x: np.ndarray) -> None:  # x: [C, k*frame]
        frames = frames_from_signal(torch.from_numpy(x)[None].to(fir.taps.device), frame)  # [k, 1, C*N]
        out.append(fir.process(frames)[:, 0].float().cpu().numpy())

    for b in blocks:
        if b.shape[0] != channels:
            raise DatasetError(f"{name}: {b.shape[0]} channels, the model codes {channels}")
        total += b.shape[1]
        pending.append(b)
        buffered = sum(p.shape[1] for p in pending)
        if buffered >= chunk_frames * frame:
            x = np.concatenate(pending, axis=1)
            cut = buffered // frame * frame
            run(x[:, :cut])
            pending = [x[:, cut:]]
    if total == 0:
        raise DatasetError(f"{name}: contains no audio samples")
    rest = np.concatenate(pending, axis=1)
    tail = (math.ceil(rest.shape[1] / frame) + flush_frames) * frame - rest.shape[1]
    run(np.concatenate([rest, np.zeros((channels, tail), np.float32)], axis=1))
    return np.concatenate(out), total


def _encode_track(track, rows: Sequence[str], fir: FrameFIR, model: LoadedModel, dtype, chunk_frames: int):
    """All rows of one track as ``(latents [R, K, L] dtype, samples)``."""
    cfg, zs, length = model.config, [], None
    for stem in rows:
        name, rate, blocks = _blocks(track, stem, chunk_frames * cfg.frame)
        if rate != cfg.sample_rate:
            raise DatasetError(f"{name}: {rate} Hz, the model codes {cfg.sample_rate} Hz")
        z, n = encode_stem(blocks, fir, cfg.frame, cfg.flush_frames, name, cfg.channels, chunk_frames)
        if length is not None and n != length:
            raise DatasetError(f"{name}: {n} samples, but {rows[0]} has {length} (stems of a track must match)")
        length = n
        if dtype == np.float16 and np.abs(z).max() > np.finfo(np.float16).max:
            raise DatasetError(f"{name}: latents exceed the float16 range; build with dtype='float32'")
        zs.append(z.astype(dtype))
    return np.stack(zs), length


# ----------------------------------------------------------------------- build / open


def publish(tmp: Path, out_dir: Path) -> None:
    """Move a finished build folder into place; an existing ``out_dir`` is set aside first and
    removed only once the new one is there (shared by the latent cache and the .wlc shards)."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def build_cache(root, subset: str, model: LoadedModel, out_dir, *, stems: Sequence[str] = STEMS,
                split: str | None = None, is_wav: bool | None = None, include_mixture: bool = False,
                dtype: str = "float16", shard_frames: int = DEFAULT_SHARD_FRAMES,
                chunk_frames: int = DEFAULT_CHUNK_FRAMES, device: str | None = None, overwrite: bool = False,
                progress: Callable[[str], None] | None = None) -> LatentCache:
    """Encode every stem of ``root/subset`` once into a latent cache at ``out_dir``.

    The cache is built in a hidden sibling folder ``.NAME.partial`` and renamed
    into place at the end, so an interrupted build leaves no cache (a rerun
    starts over). ``out_dir`` must not exist unless ``overwrite``. ``device``:
    where the analysis runs (default: CUDA when available).
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DatasetError(f"{out_dir}: exists (pass overwrite=True to rebuild)")
    tracks = open_musdb(root, subset, is_wav=is_wav, split=split, stems=stems, require_mixture=include_mixture)
    rows = list(stems) + (["mixture"] if include_mixture else [])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with torch.no_grad():
        fir = FrameFIR(model.codec.analysis_taps().detach().to(device).contiguous())
    np_dtype = np.dtype(dtype)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        entries, shards, pending = [], [], []

        def close_shard() -> None:
            name = f"shard-{len(shards):05d}.npy"
            frames = sum(z.shape[1] for z in pending)
            arr = np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np_dtype,
                                            shape=(len(rows), frames, model.config.latent_dim))
            at = 0
            for z in pending:
                arr[:, at : at + z.shape[1]] = z
                at += z.shape[1]
            arr.flush()
            del arr
            shards.append({"file": name, "frames": frames})
            pending.clear()

        offset = 0
        for track in tracks:
            if progress:
                progress(track.name)
            z, samples = _encode_track(track, rows, fir, model, np_dtype, chunk_frames)
            entries.append({"name": track.name, "shard": len(shards), "offset": offset,
                            "frames": z.shape[1], "samples": samples})
            pending.append(z)
            offset += z.shape[1]
            if offset >= shard_frames:
                close_shard()
                offset = 0
        if pending:
            close_shard()
        index = {
            "format": CACHE_FORMAT, "version": CACHE_VERSION, "created_by": f"walloc-audio {__version__}",
            "model": {"name": model.name, "sha256": model.sha256, "config": model.config.to_dict()},
            "dtype": dtype, "layout": "[rows, frames, latent_dim]", "stems": list(stems),
            "include_mixture": include_mixture,
            "source": {"root": str(Path(root).resolve()), "subset": subset, "split": split,
                       "is_wav": bool(tracks[0].is_wav)},
            "frame": model.config.frame, "sample_rate": model.config.sample_rate,
            "delay_samples": model.config.delay_samples, "flush_frames": model.config.flush_frames,
            "shards": shards, "tracks": entries,
        }
        (tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_cache(out_dir, model)


def open_cache(out_dir, model: LoadedModel) -> LatentCache:
    """Open a cache for ``model``; refuses one built by another model or format version."""
    path = Path(out_dir)
    try:
        index = json.loads((path / INDEX).read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: not a latent cache (no {INDEX}; an interrupted build leaves none)") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path / INDEX}: unreadable ({exc})") from None
    if index.get("format") != CACHE_FORMAT or index.get("version") != CACHE_VERSION:
        raise DatasetError(f"{path}: cache format {index.get('format')!r} version {index.get('version')!r}, "
                           f"this code reads {CACHE_FORMAT!r} version {CACHE_VERSION}: rebuild it")
    built = index["model"]
    if built["name"] != model.name or built["sha256"] != model.sha256:
        raise DatasetError(
            f"{path}: built with model {built['name']!r} (weights sha256 {built['sha256']}), not with "
            f"{model.name!r} (sha256 {model.sha256}); its latents would be wrong for this model: rebuild it"
        )
    cache = LatentCache(path, index, model)
    rows = len(cache.stems) + cache.has_mixture
    for i, s in enumerate(index["shards"]):
        try:
            arr = cache.shard(i)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{cache.shard_files[i]}: unreadable shard ({exc})") from None
        if arr.shape != (rows, s["frames"], model.config.latent_dim) or arr.dtype != cache.dtype:
            raise DatasetError(f"{cache.shard_files[i]}: shape {arr.shape} {arr.dtype}, the index says "
                               f"{(rows, s['frames'], model.config.latent_dim)} {cache.dtype}")
    return cache


@dataclass(frozen=True)
class CacheStats:
    tracks: int
    frames: int
    samples: int          # audio samples per stem, all tracks
    seconds: float
    stems: int
    bytes: int            # shards + index on disk
    pcm16_bytes: int      # the same stems as 16-bit PCM
    dtype: str

    @property
    def ratio(self) -> float:
        """How many times smaller than 16-bit PCM stems."""
        return self.pcm16_bytes / self.bytes


def cache_stats(cache: LatentCache) -> CacheStats:
    """Size on disk against the 16-bit PCM stems it replaces (mixture row, if any, counted as a stem)."""
    cfg = cache.config
    rows = len(cache.stems) + cache.has_mixture
    samples = sum(t.samples for t in cache.tracks)
    size = sum(f.stat().st_size for f in cache.shard_files) + (cache.path / INDEX).stat().st_size
    return CacheStats(len(cache.tracks), sum(t.frames for t in cache.tracks), samples, samples / cfg.sample_rate,
                      rows, size, samples * cfg.channels * 2 * rows, cache.dtype.name)
