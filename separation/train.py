"""Training latent-domain and waveform-domain separators on equal terms, with Lightning.

Both models train through Asteroid's ``System`` (a LightningModule) on the same
tracks with the same augmentation draws (:mod:`separation.data`) and the same
wall-clock budget (``Trainer(max_time=...)``), with an Asteroid loss (MSE by
default, or SNR / SI-SDR: ``training.loss``) in their own domain. The latent
model's targets are cached WaLLoC latents; the codec's decoder is nearly
orthonormal, so latent MSE tracks waveform MSE in the subspace the codec keeps.
Lightning flags (``devices``, ``num_nodes``, ``strategy``, ``accelerator``)
pass straight through, so the same code trains on many GPUs. A crashed or
interrupted run resumes from ``exp_dir/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader

from walloc_audio.pretrained import LoadedModel

from .data import LatentRemixDataset, WaveformRemixDataset
from .models import LatentSeparator, waveform_baseline


class MonoPerChannel(nn.Module):
    """Run a mono separator on every channel: ``[B, C, T] -> [B, S, C, T]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        y = self.model(x.reshape(b * c, 1, t))  # [B*C, S, T]
        return y.reshape(b, c, y.shape[1], -1).transpose(1, 2)[..., :t]


LOSSES = ("mse", "snr", "sisdr", "tsnr")
TSNR_CAP_DB = 30.0  # "tsnr": no gain is sought past 30 dB of SNR, relative to the mixture's energy


def thresholded_neg_snr(est: torch.Tensor, target: torch.Tensor, cap_db: float = TSNR_CAP_DB) -> torch.Tensor:
    """Negative SNR in dB of ``[B, S, N]`` estimates, floored relative to the mixture; ``[B, S]``.

    ``-10 log10((|s|^2 + t) / (|s - est|^2 + t))`` with ``t = 10^(-cap/10) |x|^2``
    and ``x`` the sum of the targets (the mixture): a log error per stem and
    example, so a quiet stem counts as much as a loud one, as it does in SDR.
    Unlike plain SNR it is well posed on a silent target: the loss then asks
    for an estimate at least ``cap`` dB below the mixture, and no more (the
    floor of the thresholded SNR of Wisdom et al., "Unsupervised sound
    separation using mixture invariant training", 2020). An all-silent crop
    costs 0 and has no gradient.
    """
    floor = 10.0 ** (-cap_db / 10.0) * target.sum(1, keepdim=True).pow(2).sum(-1) + 1e-8  # [B, 1]
    err = (est - target).pow(2).sum(-1)
    ref = target.pow(2).sum(-1)
    return 10.0 * (torch.log10(err + floor) - torch.log10(ref + floor))


def make_loss(name: str):
    """A multi-source loss on ``[B, S, ...]`` estimates, averaged over the batch.

    ``"mse"``: mean squared error (Asteroid's ``multisrc_mse``); ``"snr"`` /
    ``"sisdr"``: negative SNR / SI-SDR in dB per source, averaged (Asteroid's
    ``MultiSrcNegSDR``); ``"tsnr"``: :func:`thresholded_neg_snr`. Stems are in
    a fixed order (drums, bass, other, vocals), so no permutation search: PIT
    would only let the model swap them. Each example's sources are flattened
    (latent channels x frames, or audio channels x samples). A silent target
    stem has no SNR to speak of; its -80 dB floor makes the plain SDR losses
    fragile on crops without vocals, which the mixture-relative floor of
    ``"tsnr"`` avoids.
    """
    if name == "tsnr":
        return lambda est, target: thresholded_neg_snr(est.flatten(2), target.flatten(2)).mean()
    from asteroid.losses import multisrc_mse, multisrc_neg_sisdr, multisrc_neg_snr

    fn = {"mse": multisrc_mse, "snr": multisrc_neg_snr, "sisdr": multisrc_neg_sisdr}.get(name)
    if fn is None:
        raise ValueError(f"unknown loss {name!r} ({' | '.join(LOSSES)})")

    def loss(est: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fn(est.flatten(2), target.flatten(2)).mean()

    return loss


class _Timing:
    """Lightning callback: seconds per epoch and examples per second."""

    def __init__(self):
        from pytorch_lightning import Callback

        class Cb(Callback):
            def __init__(cb):
                cb.epochs, cb.examples, cb.t0 = [], 0, None

            def on_train_epoch_start(cb, trainer, module):
                cb.t0 = time.perf_counter()

            def on_train_batch_end(cb, trainer, module, outputs, batch, batch_idx):
                cb.examples += batch[0].shape[0]

            def on_train_epoch_end(cb, trainer, module):
                # A run resumed from an end-of-epoch checkpoint can end an epoch it never started here.
                if cb.t0 is not None:
                    cb.epochs.append(time.perf_counter() - cb.t0)
                cb.t0 = None

        self.callback = Cb()


def make_network(kind: str, conf: dict, model: LoadedModel | None = None) -> nn.Module:
    """The separator for ``kind`` = ``"latent"`` or ``"waveform"``, with the same masker settings."""
    mk = conf["masker"]
    if kind == "latent":
        lat = conf["latent"]
        return LatentSeparator(model.config.latent_dim, 4, masker=mk["kind"], output=lat["output"],
                               mask_act=lat["mask_act"], scale=lat["scale"],
                               consistency=bool(lat.get("consistency", False)), **mk["kwargs"])
    if kind == "waveform":
        wf = conf["waveform"]
        return MonoPerChannel(waveform_baseline(4, 44100, kernel_size=wf["kernel_size"], n_filters=wf["n_filters"],
                                                stride=wf["stride"], mask_act=wf["mask_act"], **mk["kwargs"]))
    raise ValueError(f"unknown model kind {kind!r}")


def build(kind: str, conf: dict, model: LoadedModel | None, cache=None, data_root=None):
    """``(network, train dataset)``; both kinds draw the same crops, gains and remixes."""
    tr = conf["training"]
    common = dict(remix=tr["remix"], gain_db=tuple(tr["gain_db"]), samples_per_epoch=tr["samples_per_epoch"],
                  seed=tr["seed"])
    if kind == "latent":
        frames = max(1, round(tr["segment_seconds"] * model.config.sample_rate / model.config.frame))
        return make_network(kind, conf, model), LatentRemixDataset(cache, frames, **common)
    samples = int(tr["segment_seconds"] * 44100) // 256 * 256
    return make_network(kind, conf), WaveformRemixDataset(data_root, "train", samples, **common)


def train(kind: str, conf: dict, exp_dir: Path, model: LoadedModel | None = None, cache=None, data_root=None,
          trainer_kwargs: dict | None = None) -> dict:
    """Train for ``conf['training']['budget_minutes']`` of wall clock; returns the run's figures."""
    import pytorch_lightning as pl
    from asteroid.engine import System
    from pytorch_lightning.callbacks import ModelCheckpoint

    tr = conf["training"]
    torch.manual_seed(tr["seed"])
    net, data = build(kind, conf, model, cache, data_root)
    loader = DataLoader(data, batch_size=tr["batch_size"], shuffle=False, num_workers=tr["num_workers"],
                        drop_last=True, persistent_workers=tr["num_workers"] > 0)
    optimizer = torch.optim.Adam(net.parameters(), lr=tr["lr"])
    system = System(net, optimizer, make_loss(tr.get("loss", "mse")), loader)  # conf.yml sits beside the run
    timing = _Timing()
    ckpt_dir = exp_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    trainer = pl.Trainer(
        max_time={"minutes": tr["budget_minutes"]}, max_epochs=tr.get("max_epochs", -1),
        max_steps=tr.get("max_steps", -1), default_root_dir=str(exp_dir),
        callbacks=[ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True), timing.callback],
        logger=pl.loggers.CSVLogger(str(exp_dir), name="logs"), enable_progress_bar=tr.get("progress", True),
        limit_val_batches=0, num_sanity_val_steps=0, **(trainer_kwargs or {}),
    )
    t0 = time.perf_counter()
    trainer.fit(system, ckpt_path=str(last) if last.exists() else None)
    wall = time.perf_counter() - t0
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(exp_dir / "model.safetensors"))
    cb = timing.callback
    figures = {
        "kind": kind, "parameters": sum(p.numel() for p in net.parameters()),
        "masker_parameters": sum(p.numel() for n, p in net.named_parameters() if "masker" in n),
        "wall_seconds": wall, "epochs": len(cb.epochs), "steps": int(trainer.global_step),
        "examples": cb.examples, "examples_per_second": cb.examples / max(sum(cb.epochs), 1e-9),
        "seconds_per_epoch": (sum(cb.epochs) / len(cb.epochs)) if cb.epochs else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": float(trainer.callback_metrics.get("loss", float("nan"))),
    }
    (exp_dir / "train_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
