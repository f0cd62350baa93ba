"""Training audio: track lists, decoded tracks and MUSDB-style stems, random crops with random gains and remixes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from walloc_audio.audio import find_audio
from walloc_audio.errors import WallocError
from walloc_audio.tools.training.linear_fit import iter_clips
from walloc_audio.tools.training.config import TrainConfig



def list_tracks(spec: str) -> list[str]:
    """Tracks named by a list file (one path per line, relative to the file) or found in a folder."""
    p = Path(spec)
    if p.is_dir():
        return find_audio([spec])
    if p.is_file():
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        return [str((p.parent / ln) if not os.path.isabs(ln) else Path(ln)) for ln in lines]
    raise WallocError(f"training data {spec!r} is neither a folder nor a track list")


def load_tracks(paths: list[str], cfg: TrainConfig, log=print) -> list[torch.Tensor]:
    """Read tracks into memory; skip (and count) the unusable ones with the reason."""
    skipped: dict[str, int] = {}

    def skip(path: str, why: str) -> None:
        skipped[why.split(" (")[0][:60]] = skipped.get(why.split(" (")[0][:60], 0) + 1

    tracks = []
    for path, x in iter_clips(paths, cfg.sample_rate, cfg.channels, cfg.max_track_seconds, on_skip=skip):
        if x.shape[1] < cfg.min_track_seconds * cfg.sample_rate:
            skip(path, "shorter than min_track_seconds")
        elif float(np.abs(x).max()) < 1e-4:
            skip(path, "silent")
        elif not np.all(np.isfinite(x)):
            skip(path, "not finite")
        else:
            tracks.append(torch.from_numpy(np.ascontiguousarray(x)))
    n_skip = sum(skipped.values())
    log(f"{len(tracks)} tracks read, {n_skip} skipped" + (f" ({skipped})" if skipped else ""))
    return tracks


def load_stems(root: str, cfg: TrainConfig, log=print) -> list[torch.Tensor]:
    """Stems ``[S, C, T]`` of every track under ``ROOT/train`` (MUSDB18-HQ layout), unusable ones skipped."""
    names = ("drums", "bass", "other", "vocals")
    out = []
    base = Path(root) / "train"
    folders = sorted(d for d in base.iterdir() if d.is_dir()) if base.is_dir() else []
    if not folders:
        raise WallocError(f"stems: no track folders under {base}")
    for d in folders:
        clips = [x for _, x in iter_clips([str(d / f"{n}.wav") for n in names], cfg.sample_rate, cfg.channels,
                                          cfg.max_track_seconds)]
        if len(clips) == len(names):
            n = min(c.shape[1] for c in clips)
            out.append(torch.from_numpy(np.stack([c[:, :n] for c in clips])))
    log(f"{len(out)} stem tracks of {len(folders)} read from {base}")
    return out


class CropDataset(Dataset):
    """Random crops of ``crop_frames`` frames with random gains; optionally remixed stems.

    An index only seeds the draw, so the "epoch" is as long as asked.
    """

    def __init__(self, tracks: list[torch.Tensor], cfg: TrainConfig, length: int,
                 stems: list[torch.Tensor] | None = None, seed: int = 0):
        self.tracks, self.stems, self.cfg, self.length, self.seed = tracks, stems or [], cfg, length, seed
        self.samples = cfg.crop_frames * 2**cfg.J
        usable = [t for t in tracks if t.shape[1] > self.samples]
        if not usable:
            raise WallocError(f"no training track is longer than one crop ({self.samples} samples)")
        self.tracks = usable
        self.weights = np.array([t.shape[1] for t in usable], dtype=np.float64)
        self.weights /= self.weights.sum()

    def __len__(self) -> int:
        return self.length

    def _crop(self, rng: np.random.Generator, x: torch.Tensor) -> torch.Tensor:
        start = int(rng.integers(0, x.shape[-1] - self.samples + 1))
        return x[..., start : start + self.samples]

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng((self.seed, index))
        if self.stems and rng.random() < self.cfg.stem_mix_probability:
            parts = []
            for s in range(self.stems[0].shape[0]):
                track = self.stems[int(rng.integers(len(self.stems)))]
                if track.shape[-1] > self.samples:
                    parts.append(self._crop(rng, track[s]) * float(10 ** (rng.uniform(-6, 3) / 20)))
            x = torch.stack(parts).sum(0) if parts else self._crop(rng, self.tracks[0])
        else:
            x = self._crop(rng, self.tracks[int(rng.choice(len(self.tracks), p=self.weights))])
        if rng.random() < 0.5:
            x = x.flip(0)  # swap left and right
        peak = float(x.abs().max())
        lo, hi = self.cfg.gain_db
        gain = 10 ** (rng.uniform(lo, hi) / 20) / max(peak, 1e-4)  # gain relative to full scale
        return (x * min(gain, 1e4)).clamp(-1, 1).float()
