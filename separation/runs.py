"""The models of the comparison, each with its data, loss and validation, for :func:`separation.curve.fit`.

Kinds:

* ``latent``: the latent masker trained on **dequantized latents of ``.wlc``
  files** (:mod:`separation.shards`): what a receiver has; inference on the
  coded mixture.
* ``latent-float``: the same masker on float latents of PCM stems (the cache
  of :mod:`separation.cache`), inference on the coded mixture as well -- the
  difference to ``latent`` is what training on compressed files costs or gains.
* ``umx``: Open-Unmix (:mod:`separation.umx`) on PCM.
* ``waveform``: Asteroid's ConvTasNet on PCM (the first version's baseline).

All draw random crops of ``segment_seconds``, per-stem gains and stems from
different tracks of the same training tracks (``split="train"`` of the set;
its validation tracks are held out and validate every model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from walloc_audio.pretrained import LoadedModel

from .curve import score_set
from .data import STEMS, LatentRemixDataset, WaveformRemixDataset, open_musdb
from .models import WallocFrontEnd
from .shards import ShardRemixStream, iter_tracks, open_sources

KINDS = ("latent", "latent-float", "umx", "waveform")


@dataclass
class Run:
    net: torch.nn.Module
    loss: Callable
    batches: Callable[[int], object]
    validate: Callable[[torch.nn.Module], dict]
    data: object


def _pcm_stems(track) -> np.ndarray:
    return np.stack([track.targets[s].audio.T for s in STEMS]).astype(np.float32)  # [S, C, T]


def _first_seconds(x: np.ndarray, seconds: float | None, rate: int = 44100) -> np.ndarray:
    """The first ``seconds`` of ``[..., T]`` audio (all of it for None)."""
    return x if seconds is None else np.ascontiguousarray(x[..., : int(round(seconds * rate))])


class LatentValidator:
    """Validation from coded mixtures: ``.wlc`` latents -> separator -> linear synthesis, vs the PCM stems."""

    def __init__(self, sources, model: LoadedModel, tracks, chunk_frames: int = 4096,
                 seconds: float | None = None):
        self.front = WallocFrontEnd(model)
        by_name = {t.name: t for t in iter_tracks(sources, model, rows=("mixture",))}
        missing = [t.name for t in tracks if t.name not in by_name]
        if missing:
            raise ValueError(f"validation tracks without a coded mixture: {missing}")
        self.refs = [_first_seconds(_pcm_stems(t), seconds) for t in tracks]
        c = model.config
        # The latents that synthesise the kept samples: their frames and the synthesis delay's.
        margin = -(-c.delay_samples // c.frame) + 1
        self.inputs = [torch.from_numpy(by_name[t.name].latents["mixture"][:, : -(-r.shape[-1] // c.frame) + margin])
                       for t, r in zip(tracks, self.refs)]
        self.chunk = chunk_frames

    def __call__(self, net) -> dict:
        ests = []
        for z, ref in zip(self.inputs, self.refs):
            est = torch.cat([net(z[None, :, i : i + self.chunk]) for i in range(0, z.shape[1], self.chunk)], -1)
            ests.append(self.front.decode(est, ref.shape[-1])[0].numpy())
        return score_set(self.refs, ests)


class WaveformValidator:
    """Validation on PCM mixtures for waveform-domain and spectrogram models."""

    def __init__(self, tracks, separate: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor],
                 seconds: float | None = None):
        self.inputs = [torch.from_numpy(_first_seconds(np.ascontiguousarray(t.audio.T, dtype=np.float32), seconds))
                       for t in tracks]
        self.refs = [_first_seconds(_pcm_stems(t), seconds) for t in tracks]
        self.separate = separate

    def __call__(self, net) -> dict:
        ests = [self.separate(net, x)[..., : r.shape[-1]].numpy() for x, r in zip(self.inputs, self.refs)]
        return score_set(self.refs, ests)


def _loss(name: str) -> Callable:
    """``(net, mixture, stems) -> loss`` for ``training.loss`` (the latent and waveform models)."""
    from .train import make_loss

    fn = make_loss(name)
    return lambda net, mix, stems: fn(net(mix), stems)


def network_and_loss(kind: str, conf: dict, model: LoadedModel | None, umx_stats=None):
    """``(network, loss)`` of ``kind``; ``umx_stats``: Open-Unmix's input (mean, std), None for untrained."""
    from .train import make_network  # the latent and ConvTasNet networks, as the Lightning path builds them

    loss = conf.get("training", {}).get("loss", "mse")
    if kind in ("latent", "latent-float"):
        return make_network("latent", conf, model), _loss(loss)
    if kind == "umx":
        from .umx import UMXBaseline

        u = conf["umx"]
        mean, std = umx_stats if umx_stats is not None else (None, None)
        net = UMXBaseline(hidden_size=u["hidden_size"], nb_layers=u["nb_layers"], bandwidth_hz=u["bandwidth_hz"],
                          input_mean=mean, input_scale=std)
        return net, lambda n, x, y: n.loss(x, y)
    if kind == "waveform":
        return make_network("waveform", conf), _loss(loss)
    raise ValueError(f"unknown model kind {kind!r} ({' | '.join(KINDS)})")


def build_run(kind: str, conf: dict, exp: Path, model: LoadedModel | None, *, validation: bool = True) -> Run:
    """The network, loss, batches and validator of ``kind`` for the recipe config ``conf``
    (``validation=False``: no validator, for throughput benchmarks)."""
    tr, root = conf["training"], conf["data"]["root"]
    common = dict(remix=tr["remix"], gain_db=tuple(tr["gain_db"]), samples_per_epoch=tr["samples_per_epoch"],
                  seed=tr["seed"])
    val_tracks = open_musdb(root, "train", split="valid") if validation else []
    if conf["data"].get("val_tracks"):
        val_tracks = val_tracks[: conf["data"]["val_tracks"]]
    val_seconds = conf["data"].get("val_seconds")  # the first N s of each validation track (null: all)

    def loader(data, shuffle_epoch=True):
        dl = DataLoader(data, batch_size=tr["batch_size"], num_workers=tr["num_workers"], drop_last=True,
                        persistent_workers=tr["num_workers"] > 0)

        def batches(epoch: int):
            data.set_epoch(epoch)
            return dl
        return batches

    if kind in ("latent", "latent-float"):
        frames = max(1, round(tr["segment_seconds"] * model.config.sample_rate / model.config.frame))
        net, loss = network_and_loss(kind, conf, model)
        if kind == "latent":
            sh = conf.get("shards", {})
            data = ShardRemixStream(open_sources(exp / "wlc" / "train"), model, frames,
                                    mixture_prob=sh.get("mixture_prob", 0.0),
                                    buffer_tracks=sh.get("buffer_tracks", 256), **common)
        else:
            from .cache import open_cache

            data = LatentRemixDataset(open_cache(exp / "cache" / "train", model), frames, **common)
        validate = (LatentValidator(open_sources(exp / "wlc" / "valid"), model, val_tracks, seconds=val_seconds)
                    if validation else None)
        return Run(net, loss, loader(data), validate, data)
    samples = int(tr["segment_seconds"] * 44100) // 256 * 256
    data = WaveformRemixDataset(root, "train", samples, split="train", **common)
    if kind == "umx":
        from .umx import UMXBaseline, input_stats

        probe = UMXBaseline(hidden_size=8, nb_layers=1)
        stats = input_stats((data[i][0] for i in range(conf["umx"].get("stats_items", 64))), probe)
        net, loss = network_and_loss(kind, conf, model, stats)
        niter = conf["umx"].get("niter", 1)

        def separate(n, x):
            return n.separator(niter)(x[None])[0]
    elif kind == "waveform":
        net, loss = network_and_loss(kind, conf, model)

        def separate(n, x):
            chunk = 44100 * 10
            return torch.cat([n(x[None, :, i : i + chunk]) for i in range(0, x.shape[-1], chunk)], -1)[0]
    else:
        raise ValueError(f"unknown model kind {kind!r} ({' | '.join(KINDS)})")
    return Run(net, loss, loader(data), WaveformValidator(val_tracks, separate, val_seconds) if validation else None, data)
