"""Training data as a receiver has it: MUSDB-style stems coded once into ``.wlc``, in tar shards.

The float latent cache (:mod:`separation.cache`) holds what ``analyze`` makes of
PCM stems; a phone, a data lake or anyone handed compressed files holds
*quantized* latents. This module codes every stem (and the mixture) of a set
once with the codec, stores the ``.wlc`` bytes in tar shards that ``webdataset``
streams to any number of DataLoader workers and nodes, and reads them back with
range decoding and dequantization only -- no synthesis: what a separator sees
is exactly the decoder's input latents.

Layout (``out_dir/``)::

    index.json                 format, version, codec (name, weights and v2 entropy sha256),
                               quality, stems, per shard its tracks, per track name,
                               samples and bytes of every row, totals
    shard-00000.tar ...        per track ``tNNNNN.json`` (name, samples) and
                               ``tNNNNN.{drums,bass,other,vocals,mixture}.wlc``

A local folder ``DIR/<track>/<stem>.wlc`` (what ``walloc-audio encode`` writes
for a folder of stems) is read the same way: :func:`open_sources` takes either.

Quantized remixing. Dequantized stem latents no longer add up to the coded
mixture's latents exactly: each file is quantized at a step that follows its
own level. :func:`remix_gap` measures the gap; training uses sums of
dequantized stem latents (any remix, any gain: the dequantized latents of a
gained stem are the gained latents at the step the codec would pick for it)
and, with ``mixture_prob``, the coded mixture itself with its own stems as
targets -- what inference sees.

Bad data is skipped and counted: a truncated or corrupt ``.wlc`` or tar member
drops its track (``ShardRemixStream.skipped``), the run goes on; a ``.wlc`` of
another codec is an error (:class:`~separation.data.DatasetError`), as it
would silently train on the wrong latents.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset

from walloc_audio.bitstream import BitstreamReader
from walloc_audio.codec_stream import PacketDecoder
from walloc_audio.errors import WallocError
from walloc_audio.pretrained import LoadedModel

from .data import STEMS, DatasetError, draw_remix, open_musdb, stem_path

SHARD_FORMAT = "walloc-wlc-shards"
SHARD_VERSION = 1
INDEX = "index.json"
ROWS = STEMS + ("mixture",)
MAX_WLC_BYTES = 1 << 28  # one member of a shard; a 60-min stereo .wlc at 64 kbps is ~29 MB


# ----------------------------------------------------------------------- coding


class _ArrayReader:
    """An in-memory ``[C, T]`` array that :func:`walloc_audio.compress.encode_stream` reads like a file."""

    def __init__(self, x: np.ndarray, sample_rate: int, name: str, block: int = 1 << 18):
        self.x, self.sample_rate, self.source_rate, self.name = x, sample_rate, sample_rate, name
        self.channels, self.block = x.shape[0], block

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(0, self.x.shape[1], self.block):
            yield np.ascontiguousarray(self.x[:, i : i + self.block], dtype=np.float32)


def encode_array(x: np.ndarray, model: LoadedModel, *, quality: float | None = None, name: str = "<array>") -> bytes:
    """The ``.wlc`` bytes of audio ``x`` ``[C, T]`` at the model's rate, as ``walloc-audio encode`` codes it."""
    from walloc_audio.compress import encode_stream

    buf = io.BytesIO()
    encode_stream(_ArrayReader(x, model.config.sample_rate, name), buf, model, quality=quality)
    return buf.getvalue()


def encode_file(path: str | os.PathLike, model: LoadedModel, *, quality: float | None = None) -> bytes:
    """The ``.wlc`` bytes of an audio file (resampled and channel-mapped as ``encode`` does)."""
    from walloc_audio.audio import AudioReader
    from walloc_audio.compress import encode_stream

    buf = io.BytesIO()
    with AudioReader(path, sample_rate=model.config.sample_rate, block_frames=1 << 18) as reader:
        encode_stream(reader, buf, model, quality=quality)
    return buf.getvalue()


def read_latents(data: bytes, model: LoadedModel, what: str = "<wlc>") -> tuple[np.ndarray, int]:
    """Dequantized latents ``[L, K]`` float32 and the sample count of one ``.wlc``, no synthesis.

    Raises :class:`DatasetError` for a file of another codec and
    :class:`~walloc_audio.errors.BitstreamError` for a corrupt or truncated one.
    """
    reader = BitstreamReader(io.BytesIO(data))
    h = reader.header
    if h.model != model.name or h.model_sha256 != model.sha256:
        raise DatasetError(f"{what}: coded with {h.model!r} (sha256 {h.model_sha256[:12]}...), not with "
                           f"{model.name!r} (sha256 {model.sha256[:12]}...)")
    dec = PacketDecoder.for_header(model, h)
    parts = [dec.latents(p.frames, p.payload) for p in reader]
    z = np.concatenate(parts, axis=1) if parts else np.zeros((model.config.latent_dim, 0), np.float32)
    return np.ascontiguousarray(z, dtype=np.float32), int(reader.num_samples)


def _track_audio(track, row: str) -> np.ndarray:
    """``[C, T]`` float32 of one row of a musdb track (wav sets read the file, .stem.mp4 decodes it)."""
    if track.is_wav:
        import soundfile as sf

        path = track.path if row == "mixture" else stem_path(track, row)
        return sf.read(str(path), dtype="float32", always_2d=True)[0].T
    audio = track.audio if row == "mixture" else track.targets[row].audio
    return np.ascontiguousarray(audio.T, dtype=np.float32)


# ----------------------------------------------------------------------- building


@dataclass
class ShardSet:
    """A built shard set: its folder and ``index.json``."""

    path: Path
    index: dict

    @property
    def files(self) -> list[Path]:
        return [self.path / s["file"] for s in self.index["shards"]]

    @property
    def wlc_bytes(self) -> int:
        return sum(sum(t["bytes"].values()) for t in self.index["tracks"])


def build_shards(root, subset: str, model: LoadedModel, out_dir, *, split: str | None = None,
                 quality: float | None = None, tracks_per_shard: int = 4, overwrite: bool = False,
                 progress: Callable[[str], None] | None = None) -> ShardSet:
    """Code every stem and the mixture of ``root/subset`` once into tar shards at ``out_dir``.

    Built in a hidden sibling folder and renamed into place at the end: an
    interrupted build leaves no set. ``out_dir`` must not exist unless
    ``overwrite``. Mixtures: the set's own mixture file where it has one, else
    the sum of the stems.
    """
    import webdataset as wds

    from .cache import publish

    if tracks_per_shard < 1:
        raise ValueError(f"tracks_per_shard must be >= 1, got {tracks_per_shard}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise DatasetError(f"{out_dir}: exists (pass overwrite=True to rebuild)")
    tracks = open_musdb(root, subset, split=split)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = {"format": SHARD_FORMAT, "version": SHARD_VERSION, "model": model.name, "model_sha256": model.sha256,
             "entropy_sha256": model.adaptive_sha256, "quality": quality, "stems": list(STEMS), "rows": list(ROWS),
             "source": {"root": str(root), "subset": subset, "split": split}, "shards": [], "tracks": []}
    pcm_bytes = 0
    try:
        for s0 in range(0, len(tracks), tracks_per_shard):
            name = f"shard-{len(index['shards']):05d}.tar"
            names = []
            with wds.TarWriter(str(tmp / name)) as sink:
                for i in range(s0, min(s0 + tracks_per_shard, len(tracks))):
                    track = tracks[i]
                    stems = {s: _track_audio(track, s) for s in STEMS}
                    has_mix = not track.is_wav or Path(track.path).is_file()
                    mixture = _track_audio(track, "mixture") if has_mix else sum(stems.values())
                    coded = {r: encode_array(a, model, quality=quality, name=f"{track.name}/{r}")
                             for r, a in {**stems, "mixture": mixture}.items()}
                    samples = int(mixture.shape[1])
                    key = f"t{i:05d}"
                    sink.write({"__key__": key, "json": {"name": track.name, "samples": samples},
                                **{f"{r}.wlc": b for r, b in coded.items()}})
                    index["tracks"].append({"name": track.name, "key": key, "shard": len(index["shards"]),
                                            "samples": samples, "bytes": {r: len(b) for r, b in coded.items()}})
                    pcm_bytes += sum(a.size * 2 for a in stems.values())
                    names.append(track.name)
                    if progress:
                        progress(track.name)
            index["shards"].append({"file": name, "tracks": names})
        index["pcm16_stem_bytes"] = pcm_bytes
        (tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShardSet(out_dir, index)


def open_shards(out_dir, model: LoadedModel) -> ShardSet:
    """Open a built shard set, checking it was coded by ``model``."""
    out_dir = Path(out_dir)
    try:
        index = json.loads((out_dir / INDEX).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{out_dir}: not a .wlc shard set ({exc})") from None
    if index.get("format") != SHARD_FORMAT or index.get("version") != SHARD_VERSION:
        raise DatasetError(f"{out_dir}: not a version-{SHARD_VERSION} {SHARD_FORMAT} set")
    if (index["model"], index["model_sha256"]) != (model.name, model.sha256):
        raise DatasetError(f"{out_dir}: coded with {index['model']!r} (sha256 {index['model_sha256'][:12]}...), "
                           f"not {model.name!r} (sha256 {model.sha256[:12]}...): rebuild it (stage 1)")
    return ShardSet(out_dir, index)


# ----------------------------------------------------------------------- reading


@dataclass
class DecodedTrack:
    name: str
    samples: int
    latents: dict  # row -> [L, K] float32


@dataclass
class Skips:
    """Tracks dropped while reading, with why (a corrupt shard loses the tracks after the damage too)."""

    items: list = field(default_factory=list)

    def add(self, what: str, why: str) -> None:
        self.items.append({"what": what, "why": why})

    def __len__(self) -> int:
        return len(self.items)


def open_sources(path) -> list[str]:
    """The sources of a set: its tar shards (a shard set or a folder of ``*.tar``), or
    its track folders (a local folder ``DIR/<track>/<stem>.wlc``)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".tar":
        return [str(path)]
    if not path.is_dir():
        raise DatasetError(f"{path}: no such folder")
    tars = sorted(str(p) for p in path.glob("*.tar"))
    if tars:
        return tars
    folders = sorted(str(p) for p in path.iterdir() if p.is_dir() and any(p.glob("*.wlc")))
    if not folders:
        raise DatasetError(f"{path}: neither tar shards nor track folders of .wlc files")
    return folders


def _samples(source: str, skips: Skips) -> Iterator[dict]:
    """Raw samples ``{"__key__", "json"?, "ROW.wlc": bytes}`` of one tar shard or track folder."""
    if os.path.isdir(source):
        sample = {"__key__": os.path.basename(source), "json": json.dumps({"name": os.path.basename(source)}).encode()}
        for p in sorted(Path(source).glob("*.wlc")):
            if p.stat().st_size <= MAX_WLC_BYTES:
                sample[f"{p.stem}.wlc"] = p.read_bytes()
        yield sample
        return
    from webdataset.tariterators import tar_file_expander

    def handler(exn) -> bool:
        skips.add(source, f"unreadable shard ({exn})")
        return False  # the rest of a damaged tar cannot be trusted: stop reading this shard

    current: dict | None = None
    try:
        with open(source, "rb") as stream:
            members = list(tar_file_expander([{"url": source, "stream": stream}], handler=handler, eof_value=None))
    except (OSError, tarfile.TarError) as exc:
        skips.add(source, f"unreadable shard ({exc})")
        members = []
    for member in members:
        fname, data = member["fname"], member["data"]
        key, _, ext = os.path.basename(fname).partition(".")
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key}
        if len(data) <= MAX_WLC_BYTES:
            current[ext] = data
    if current is not None:
        yield current


def decode_sample(sample: dict, model: LoadedModel, rows: Sequence[str], skips: Skips) -> DecodedTrack | None:
    """Dequantized latents of the ``rows`` of one sample; ``None`` (and counted) if any is missing or corrupt."""
    try:
        meta = json.loads(sample.get("json", b"{}"))
    except ValueError:
        meta = {}
    name = meta.get("name", sample["__key__"])
    latents, samples = {}, None
    for row in rows:
        data = sample.get(f"{row}.wlc")
        if data is None:
            skips.add(name, f"no {row}.wlc")
            return None
        try:
            latents[row], n = read_latents(data, model, f"{name}/{row}.wlc")
        except DatasetError:
            raise
        except (WallocError, ValueError, OverflowError) as exc:  # BitstreamError and what a corrupt payload raises
            skips.add(name, f"{row}.wlc: {exc}")
            return None
        samples = n if samples is None else samples
    frames = {z.shape[1] for z in latents.values()}
    if len(frames) > 1:
        skips.add(name, f"rows of different lengths ({sorted(frames)} frames)")
        return None
    return DecodedTrack(name, int(samples or 0), latents)


def iter_tracks(sources: Sequence[str], model: LoadedModel, rows: Sequence[str] = ROWS,
                skips: Skips | None = None) -> Iterator[DecodedTrack]:
    """Every decodable track of ``sources`` in order; the others are counted in ``skips``."""
    skips = skips if skips is not None else Skips()
    for source in sources:
        for sample in _samples(source, skips):
            track = decode_sample(sample, model, rows, skips)
            if track is not None:
                yield track


def remix_gap(tracks: Sequence[DecodedTrack]) -> dict:
    """How far the coded mixture's latents are from the sum of the coded stems' latents.

    Returns the energy ratio ``|Q(mix) - sum_s Q(stem_s)|^2 / |Q(mix)|^2`` in dB
    per track and its median over the set. Both sides carry quantization noise
    (the sum of four stems' and the mixture's own), so this is about the
    codec's noise level at the chosen quality: training inputs that are sums of
    coded stems differ from a coded mixture by that much.
    """
    per = []
    for t in tracks:
        mix = t.latents["mixture"]
        total = sum(t.latents[s] for s in STEMS)
        err = float(np.sum((mix - total) ** 2))
        ref = float(np.sum(mix**2))
        per.append({"name": t.name, "gap_db": 10 * math.log10(max(err, 1e-30) / max(ref, 1e-30))})
    gaps = [p["gap_db"] for p in per]
    return {"tracks": per, "median_gap_db": float(np.median(gaps)) if gaps else None}


# ----------------------------------------------------------------------- training stream


def _split(items: list, rank: int, world: int) -> list:
    return items[rank::world] if world > 1 else items


class ShardRemixStream(IterableDataset):
    """Augmented examples from ``.wlc`` sources, ``samples_per_epoch`` per epoch over all readers.

    Each DataLoader worker on each node reads its own share of the sources
    (``webdataset``'s split by node, then by worker: give at least ``nodes *
    workers`` shards), keeps up to ``buffer_tracks`` decoded tracks in memory
    and draws crops from them with the same augmentation as
    :class:`~separation.data.LatentRemixDataset` (random crops, gains, stems
    from different tracks), decoding one new track every ``crops_per_track``
    items once the buffer is warm. When the buffer holds all of a worker's
    tracks, nothing is decoded again.

    With probability ``mixture_prob`` an item is not a remix: one track, one
    position, one gain for every stem, and the *coded mixture* as input with
    the coded stems as targets (what inference sees; its input is not the sum
    of the targets).

    Shape: ``(mixture [L, F], stems [S, L, F])`` float32 per item.
    """

    def __init__(self, sources: Sequence[str], model: LoadedModel, segment_frames: int, *, remix: bool = True,
                 gain_db=(-3.0, 3.0), samples_per_epoch: int = 512, seed: int = 0, buffer_tracks: int = 256,
                 crops_per_track: int = 16, warm_tracks: int = 8, mixture_prob: float = 0.0,
                 silence_db: float | None = None):
        super().__init__()
        if not 0.0 <= mixture_prob <= 1.0:
            raise ValueError(f"mixture_prob must be in [0, 1], got {mixture_prob}")
        if segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
        self.sources, self.model, self.segment = list(sources), model, segment_frames
        self.remix, self.gain_db, self.samples_per_epoch, self.seed = remix, tuple(gain_db), samples_per_epoch, seed
        self.buffer_tracks, self.crops_per_track, self.warm_tracks = buffer_tracks, crops_per_track, warm_tracks
        self.mixture_prob, self.silence_db = mixture_prob, silence_db
        self.rows = ROWS if mixture_prob > 0 else STEMS
        self.epoch, self.skips = 0, Skips()
        self._buffer: list[DecodedTrack] = []
        self._tracks: Iterator[DecodedTrack] | None = None
        self._exhausted = False
        cfg = model.config
        self._norm = float(segment_frames * cfg.channels * cfg.frame)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _share(self) -> tuple[list[str], int, int]:
        """This worker's sources, its index and the number of readers."""
        import torch.distributed as dist
        import torch.utils.data

        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() \
            else (0, 1)
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        mine = _split(_split(self.sources, rank, world), wid, nw)
        return mine, rank * nw + wid, world * nw

    def _next_track(self, sources: list[str]) -> DecodedTrack | None:
        while True:
            if self._tracks is None:
                self._tracks = iter_tracks(sources, self.model, self.rows, self.skips)
            track = next(self._tracks, None)
            if track is not None:
                return track
            self._tracks, self._exhausted = None, True
            if not self._buffer:
                return None  # nothing decodable at all
            if len(self._buffer) < self.buffer_tracks:
                return None  # every track is in memory: nothing new to read

    def _add(self, track: DecodedTrack, rng: np.random.Generator) -> None:
        if len(self._buffer) < self.buffer_tracks:
            self._buffer.append(track)
        else:
            self._buffer[int(rng.integers(len(self._buffer)))] = track

    def _crop(self, stem: int, track: int, start: int) -> tuple[np.ndarray, float]:
        z = self._buffer[track].latents[STEMS[stem]][:, start : start + self.segment]
        if z.shape[1] < self.segment:
            z = np.pad(z, ((0, 0), (0, self.segment - z.shape[1])))
        return z, float(np.dot(z.ravel(), z.ravel())) / self._norm

    def __iter__(self):
        import torch

        sources, me, readers = self._share()
        rng = np.random.default_rng([self.seed, self.epoch, me])
        n_items = self.samples_per_epoch // readers + (1 if me < self.samples_per_epoch % readers else 0)
        if not sources:
            return
        while len(self._buffer) < self.warm_tracks and not (self._exhausted and len(self._buffer) < self.buffer_tracks):
            track = self._next_track(sources)
            if track is None:
                break
            self._add(track, rng)
        if not self._buffer:
            raise DatasetError(f"no decodable track in {len(sources)} source(s): {self.skips.items[:3]}")
        since = 0
        for _ in range(n_items):
            if since >= self.crops_per_track and not (self._exhausted and len(self._buffer) < self.buffer_tracks):
                track = self._next_track(sources)
                if track is not None:
                    self._add(track, rng)
                since = 0
            since += 1
            lengths = [t.latents[STEMS[0]].shape[1] for t in self._buffer]
            if self.mixture_prob > 0 and rng.random() < self.mixture_prob:
                t = int(rng.integers(len(self._buffer)))
                start = math.floor(rng.random() * max(lengths[t] - self.segment + 1, 1))
                gain = float(10.0 ** (rng.uniform(*self.gain_db) / 20.0))
                stems = np.stack([self._crop(s, t, start)[0] for s in range(len(STEMS))]) * gain
                mix = self._buffer[t].latents["mixture"][:, start : start + self.segment]
                mix = np.pad(mix, ((0, 0), (0, self.segment - mix.shape[1]))) * gain
                yield torch.from_numpy(np.ascontiguousarray(mix, np.float32)), torch.from_numpy(stems.astype(np.float32))
                continue
            draws = draw_remix(rng, lengths, self.segment, len(STEMS), remix=self.remix, gain_db=self.gain_db,
                               swap_prob=0.0, silence_db=self.silence_db, crop=self._crop)
            stems = torch.stack([torch.from_numpy(np.ascontiguousarray(z, np.float32)) * g for z, g, _ in draws])
            yield stems.sum(0), stems
