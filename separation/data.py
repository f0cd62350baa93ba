"""MUSDB18 access and training datasets for compressed-domain separation.

Two halves:

* :func:`open_musdb` opens MUSDB18 (``.stem.mp4``, decoded by musdb/stempeg) or a
  MUSDB18-HQ-style folder (``ROOT/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav``)
  through ``musdb.DB`` and checks it up front, so a broken set fails with one
  :class:`DatasetError` naming the file instead of deep inside a training run.
* Datasets with Open-Unmix's augmentation (random crops, random per-stem gains,
  optional channel swap, and -- with ``remix`` -- every stem from a random track,
  so each item is a mixture that never existed). :class:`LatentRemixDataset`
  does it on cached WaLLoC latents (:mod:`separation.cache`) and
  :class:`WaveformRemixDataset` on the wav stems, with the same draws: both
  sides of the compressed-vs-waveform comparison train on the same tracks with
  the same augmentation.

Why remixing latents is exact. ``analyze`` is linear, so for gains ``g_s``::

    analyze(sum_s g_s x_s) = sum_s g_s analyze(x_s)

A mixture latent is the sum of gain-scaled cached stem latents -- no audio is
decoded or re-encoded. Every item satisfies ``mixture == stems.sum(0)`` exactly
(the mixture is computed from the returned stems).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from walloc_audio.errors import WallocError

from . import STEMS  # re-exported: the stems' names and order live in the package, torch-free


class DatasetError(WallocError):
    """A dataset or latent cache is missing, malformed, or made by another model."""

    exit_code = 9


# ----------------------------------------------------------------------- MUSDB access


def open_musdb(root: str | os.PathLike, subset: str, *, is_wav: bool | None = None, split: str | None = None,
               stems: Sequence[str] = STEMS, require_mixture: bool = False) -> list:
    """Open one subset of a MUSDB18 root and check it; returns musdb ``MultiTrack`` objects.

    Args:
        root: folder holding ``train/`` and ``test/``.
        subset: ``"train"`` or ``"test"``.
        is_wav: ``None`` detects the format: any ``*.stem.mp4`` in the subset
            means MUSDB18 (``False``), else one folder of wavs per track (``True``).
        split: musdb's train/validation split of ``train`` (``"train"``,
            ``"valid"`` or ``None``). Tracks are selected by the
            ``validation_tracks`` of ``ROOT/setup.yaml`` when the root has one
            (sets built by :mod:`separation.stems` do), else by musdb's own list
            of MUSDB18 songs.
        stems: the stem files every track must have.
        require_mixture: also require ``mixture.wav`` (wav sets).

    Checked before any audio is decoded: the root and subset exist, the set is
    not empty, every track has its stem files, and (wav) all its files share one
    sample rate and length (``soundfile.info``, header only). A ``.stem.mp4``
    must hold the mixture plus four stem streams.
    """
    import musdb  # imports stempeg, which needs ffmpeg: only when a dataset is opened

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (expected a MUSDB18 root with train/ and test/)")
    folder = root / subset
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder (subset {subset!r} of {root})")
    if is_wav is None:
        is_wav = not any(folder.glob("*.stem.mp4"))
    try:
        setup = "setup.yaml" if (root / "setup.yaml").is_file() else None
        tracks = musdb.DB(root=str(root), subsets=subset, split=split, is_wav=is_wav, setup_file=setup).tracks
    except Exception as exc:  # musdb/stempeg raise bare RuntimeErrors, ffprobe errors...
        raise DatasetError(f"{folder}: musdb cannot open it ({exc})") from None
    if not tracks:
        how = f" (split {split!r})" if split else ""
        kind = "track folders" if is_wav else "*.stem.mp4 files"
        raise DatasetError(f"{folder}: empty set{how}: no {kind}")
    for track in tracks:
        if is_wav:
            _check_wav_track(folder / track.name, stems, require_mixture)
        elif track.info is None or track.info.nb_audio_streams < 5:
            raise DatasetError(f"{track.path}: not a MUSDB stem file (needs 5 audio streams)")
    return tracks


def stem_path(track, stem: str) -> Path:
    """The wav file of ``stem`` in a wav-set track (``track.path`` is its mixture.wav)."""
    return Path(track.path).parent / f"{stem}.wav"


def _check_wav_track(folder: Path, stems: Sequence[str], require_mixture: bool) -> None:
    names = list(stems) + (["mixture"] if require_mixture else [])
    first = None
    for name in names:
        path = folder / f"{name}.wav"
        if not path.is_file():
            raise DatasetError(f"{path}: missing stem file {name}.wav of track {folder.name!r}")
        try:
            info = sf.info(str(path))
        except (RuntimeError, OSError) as exc:
            raise DatasetError(f"{path}: unreadable wav ({exc})") from None
        shape = (info.samplerate, info.frames)
        if first is None:
            first = (path, shape)
        elif shape != first[1]:
            raise DatasetError(
                f"{path}: {info.frames} samples at {info.samplerate} Hz, but {first[0].name} has "
                f"{first[1][1]} samples at {first[1][0]} Hz (stems of a track must match)"
            )


# ----------------------------------------------------------------------- augmentation

Crop = Callable[[int, int, int], tuple[np.ndarray, float]]  # (stem, track, start) -> (crop, power)


def draw_remix(rng: np.random.Generator, lengths: Sequence[int], segment: int, num_stems: int, *,
               remix: bool, gain_db: tuple[float, float], swap_prob: float, silence_db: float | None,
               crop: Crop, tries: int = 10) -> list[tuple[np.ndarray, float, bool]]:
    """Draw one augmented example: per stem ``(crop, linear gain, swap channels?)``.

    Positions are drawn as a fraction ``u`` of the room a track leaves for the
    segment, ``start = floor(u * (length - segment + 1))``: two domains whose
    track lengths differ by a few frames (latents carry a short flush tail) take
    the same tracks, gains and swaps, and nearly the same positions, from the
    same generator. With ``remix`` every stem has its own track and position;
    without, all stems share one of each. ``silence_db`` (dBFS) redraws a
    stem's crop (up to ``tries`` times) whose power is below it -- all stems'
    crops when not remixing.
    """
    def position(track: int) -> int:
        return math.floor(rng.random() * max(lengths[track] - segment + 1, 1))

    floor = None if silence_db is None else 10.0 ** (silence_db / 10.0)
    if remix:
        crops = []
        for s in range(num_stems):
            for _ in range(tries):
                t = int(rng.integers(len(lengths)))
                c, power = crop(s, t, position(t))
                if floor is None or power >= floor:
                    break
            crops.append(c)
    else:
        for _ in range(tries):
            t = int(rng.integers(len(lengths)))
            start = position(t)
            pairs = [crop(s, t, start) for s in range(num_stems)]
            if floor is None or max(p for _, p in pairs) >= floor:
                break
        crops = [c for c, _ in pairs]
    gains = 10.0 ** (rng.uniform(gain_db[0], gain_db[1], size=num_stems) / 20.0)
    swaps = rng.random(num_stems) < swap_prob
    return [(c, float(g), bool(w)) for c, g, w in zip(crops, gains, swaps)]


class _RemixBase(Dataset):
    """Seeding and length shared by the two remix datasets.

    Item ``i`` of epoch ``e`` depends only on ``(seed, e, i)``, never on worker
    order: call :meth:`set_epoch` each epoch for fresh draws (it stays 0 otherwise).
    """

    def __init__(self, num_tracks: int, remix: bool, gain_db, swap_prob: float, samples_per_epoch: int | None,
                 seed: int, silence_db: float | None):
        if not 0.0 <= swap_prob <= 1.0:
            raise ValueError(f"swap_prob must be in [0, 1], got {swap_prob}")
        self.remix, self.gain_db, self.swap_prob = remix, tuple(gain_db), swap_prob
        self.samples_per_epoch = samples_per_epoch or 64 * num_tracks  # Open-Unmix: 64 per track
        self.seed, self.silence_db, self.epoch = seed, silence_db, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def _draw(self, index: int, lengths, segment: int, num_stems: int, crop: Crop):
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return draw_remix(rng, lengths, segment, num_stems, remix=self.remix, gain_db=self.gain_db,
                          swap_prob=self.swap_prob, silence_db=self.silence_db, crop=crop)


# ----------------------------------------------------------------------- latent datasets


class LatentRemixDataset(_RemixBase):
    """Augmented training examples made from cached stem latents.

    Args:
        cache: a :class:`~separation.cache.LatentCache`.
        segment_frames: crop length ``F`` in latent frames (``2**J`` samples each).
        remix: take every stem from a random track (else one track per item).
        gain_db: per-stem gain drawn uniformly in dB.
        swap_prob: per-stem probability of swapping left and right. On latents
            this is the linear map ``E P E^+`` (encoder, channel swap, pseudo-
            inverse): exact on the part of the audio the latents keep, 0.2-4 %
            relative error vs encoding the swapped audio on music. Off by default.
        samples_per_epoch: items per epoch (default 64 per track).
        silence_db: redraw crops quieter than this (dBFS; latent power is
            ``sum z^2 / (F * C * 2**J)``, the audio's mean square for a
            near-orthonormal encoder).

    Shape: ``(mixture [L, F], stems [S, L, F])`` float32, ``mixture == stems.sum(0)``.
    """

    def __init__(self, cache, segment_frames: int, *, remix: bool = True, gain_db=(-3.0, 3.0),
                 swap_prob: float = 0.0, samples_per_epoch: int | None = None, seed: int = 0,
                 silence_db: float | None = None):
        super().__init__(len(cache.tracks), remix, gain_db, swap_prob, samples_per_epoch, seed, silence_db)
        if segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
        self.cache, self.segment = cache, segment_frames
        self.lengths = [t.frames for t in cache.tracks]
        cfg = cache.config
        self._norm = float(segment_frames * cfg.channels * cfg.frame)

    def _crop(self, stem: int, track: int, start: int) -> tuple[np.ndarray, float]:
        z = self.cache.stem_crop(track, stem, start, self.segment)  # [F, L] float32
        return z, float(np.dot(z.ravel(), z.ravel())) / self._norm

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        draws = self._draw(index, self.lengths, self.segment, len(self.cache.stems), self._crop)
        swap = self.cache.swap_matrix if any(w for _, _, w in draws) else None
        out = []
        for z, gain, swapped in draws:
            if swapped:
                z = z @ swap.T  # rows are frames: z_k -> M z_k
            out.append(torch.from_numpy(np.ascontiguousarray(z.T)) * gain)  # [L, F]
        stems = torch.stack(out)
        return stems.sum(0), stems


class LatentTrackDataset(Dataset):
    """Whole tracks of a cache in order, for evaluation.

    Item ``i`` is ``(mixture [L, K], stems [S, L, K])`` for track ``i``: the
    mixture is the sum of the stems, or (``stored_mixture=True``, cache built
    with ``include_mixture``) the latent of the set's own mixture file. Decoding
    ``K`` frames yields the track delayed by ``config.delay_samples``; keep
    ``cache.tracks[i].samples`` samples after the delay. ``cache.tracks[i].name``
    names the track.
    """

    def __init__(self, cache, *, stored_mixture: bool = False):
        if stored_mixture and not cache.has_mixture:
            raise DatasetError(f"{cache.path}: built without include_mixture; no stored mixture latents")
        self.cache, self.stored_mixture = cache, stored_mixture

    def __len__(self) -> int:
        return len(self.cache.tracks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.from_numpy(np.array(self.cache.latents(index), dtype=np.float32))  # [R, K, L]
        stems = z[: len(self.cache.stems)].transpose(1, 2).contiguous()
        mixture = z[-1].T.contiguous() if self.stored_mixture else stems.sum(0)
        return mixture, stems


# ----------------------------------------------------------------------- waveform dataset


class WaveformRemixDataset(_RemixBase):
    """The waveform-domain twin of :class:`LatentRemixDataset`, for the baseline.

    Reads only the crops it needs from the wav stems (``soundfile`` seeks), so a
    dataset of any size costs no memory. Same tracks (``open_musdb`` order),
    same augmentation and, with ``frame = 2**J`` and the same seed, the same
    draws as the latent dataset with ``segment_frames = segment_samples / frame``
    (positions are aligned to ``frame`` samples). Needs a wav set.

    Shape: ``(mixture [C, T], stems [S, C, T])`` float32 with ``T = segment_samples``.
    """

    def __init__(self, root, subset: str, segment_samples: int, *, stems: Sequence[str] = STEMS,
                 split: str | None = None, frame: int = 256, remix: bool = True, gain_db=(-3.0, 3.0),
                 swap_prob: float = 0.0, samples_per_epoch: int | None = None, seed: int = 0,
                 silence_db: float | None = None):
        tracks = open_musdb(root, subset, is_wav=None, split=split, stems=stems)
        if not tracks[0].is_wav:
            raise DatasetError(f"{Path(root) / subset}: the waveform dataset reads wav stems (MUSDB18-HQ layout); "
                               "convert .stem.mp4 with musdb's `musdbconvert`")
        super().__init__(len(tracks), remix, gain_db, swap_prob, samples_per_epoch, seed, silence_db)
        if segment_samples < frame or segment_samples % frame:
            raise ValueError(f"segment_samples must be a positive multiple of frame={frame}, got {segment_samples}")
        self.stems, self.frame, self.segment = tuple(stems), frame, segment_samples // frame
        self.paths = [[str(stem_path(t, s)) for s in self.stems] for t in tracks]
        self.names = [t.name for t in tracks]
        self.lengths = [sf.info(p[0]).frames // frame for p in self.paths]  # whole frames

    def _crop(self, stem: int, track: int, start: int) -> tuple[np.ndarray, float]:
        n = self.segment * self.frame
        x = sf.read(self.paths[track][stem], start=start * self.frame, frames=n, dtype="float32", always_2d=True)[0]
        if len(x) < n:  # a track shorter than the segment
            x = np.concatenate([x, np.zeros((n - len(x), x.shape[1]), np.float32)])
        return x.T, float(np.mean(np.square(x)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        draws = self._draw(index, self.lengths, self.segment, len(self.stems), self._crop)
        stems = torch.stack([torch.from_numpy(np.ascontiguousarray(x[::-1] if w else x)) * g for x, g, w in draws])
        return stems.sum(0), stems
