"""Train a WaLLoC codec on music with PyTorch Lightning, then export it to the registry.

Recipe (``walloc-audio train CONFIG.yaml``; ``recipes/codec/`` has the shipped configs):

1. read the training tracks (a list file or a folder; unreadable, mono, short
   or silent files are skipped and counted) and optionally a MUSDB-style stem
   folder whose stems are remixed into new mixtures;
2. initialise the encoder and the decoder's linear path at the PCA solution
   (:mod:`walloc_audio.tools.training.linear_fit`) -- the nonlinear part of the decoder starts
   at zero, so step 0 *is* the linear codec;
3. train on random crops with random gains (the codec has no per-clip
   normalisation, so it must see every loudness), uniform-noise quantization
   (or straight-through rounding), a per-clip normalised MSE plus optional
   multi-resolution STFT and rate terms; Lightning handles devices, DDP
   (``--devices``/``--num-nodes``), checkpoints, resume and the progress bar;
4. export: fit the entropy model on training latents with the final encoder,
   write ``NAME.safetensors`` + ``NAME.json`` (sha256, figures) into a registry
   folder, and measure kbps/SNR/PSNR on the validation tracks through the real
   bitstream.

Everything a run produces lives in its output folder: ``config.yaml`` (resolved),
``checkpoints/`` (``last.ckpt`` is resumed automatically), ``log.jsonl``
(validation figures), ``export/`` (the model files).
"""

from __future__ import annotations

import json
import math
import random
import resource
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from walloc_audio.errors import WallocError
from walloc_audio.tools.training.linear_fit import coefficient_covariance, linear_codec
from walloc_audio.config import CodecConfig
from walloc_audio.tools.model import WallocCodec
from walloc_audio.tools.training.config import TrainConfig, portable_config
from walloc_audio.tools.training.data import CropDataset, list_tracks, load_stems, load_tracks
from walloc_audio.tools.training.export import export
from walloc_audio.tools.training.module import import_lightning, validation_batch, make_module



def initial_codec(cfg: TrainConfig, tracks: list[torch.Tensor], log=print) -> WallocCodec:
    """The PCA solution with this config's decoder (whose nonlinear part starts at zero)."""
    if cfg.init == "random":
        codec = WallocCodec(cfg.codec_config())
        g = torch.Generator().manual_seed(cfg.seed)
        basis = torch.linalg.qr(torch.randn(codec.config.coefficients, cfg.latent_dim, generator=g))[0].T
        with torch.no_grad():
            codec.encoder.copy_(basis)
            codec.bottleneck.log_step.fill_(math.log(cfg.step))
        return codec
    t0 = time.time()
    n = int(cfg.pca_seconds * cfg.sample_rate)
    cov, frames = coefficient_covariance(((str(i), t[:, :n].numpy()) for i, t in enumerate(tracks)),
                                         cfg.J, cfg.channels)
    linear = linear_codec(CodecConfig(channels=cfg.channels, sample_rate=cfg.sample_rate, J=cfg.J,
                                      latent_dim=cfg.latent_dim), cov, cfg.step)
    codec = WallocCodec(cfg.codec_config())
    missing = codec.load_state_dict(linear.state_dict(), strict=False)
    assert not missing.unexpected_keys, missing.unexpected_keys
    evals = np.sort(np.linalg.eigvalsh(cov))[::-1]
    log(f"PCA on {frames} frames in {time.time() - t0:.0f} s: {cfg.latent_dim} of {len(evals)} components keep "
        f"{evals[: cfg.latent_dim].sum() / evals.sum():.2%} of the energy")
    return codec


def run(cfg: TrainConfig, out: Path, devices: str = "auto", num_nodes: int = 1, accelerator: str = "auto",
        export_only: bool = False, log=print) -> dict:
    """Train (resuming from ``out/checkpoints/last.ckpt`` if present) and export into ``out/export``."""
    import yaml

    last = out / "checkpoints" / "last.ckpt"
    if export_only and not last.exists():
        raise WallocError(f"--export-only needs a checkpoint and there is none at {last} (train first)")
    pl = import_lightning()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    train_tracks = load_tracks(list_tracks(cfg.train), cfg, log)
    if not train_tracks:
        raise WallocError(f"no usable training audio in {cfg.train}")
    val_tracks = load_tracks(list_tracks(cfg.val), cfg, log) if cfg.val else []
    stems = load_stems(cfg.stems, cfg, log) if cfg.stems else []
    codec = initial_codec(cfg, train_tracks, log)
    module = make_module(cfg, codec)
    ckpt_dir = out / "checkpoints"
    t0 = time.time()
    steps = 0
    if not export_only:
        from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
        from pytorch_lightning.loggers import CSVLogger

        data = DataLoader(CropDataset(train_tracks, cfg, cfg.max_steps * cfg.batch_size, stems, cfg.seed),
                          batch_size=cfg.batch_size, shuffle=False, num_workers=0)
        vb = validation_batch(val_tracks, cfg)
        val = DataLoader(list(vb), batch_size=4) if len(vb) else None
        trainer = pl.Trainer(
            accelerator=accelerator, devices=devices, num_nodes=num_nodes, max_steps=cfg.max_steps,
            max_time=cfg.max_time, default_root_dir=str(out), logger=CSVLogger(str(out), name="logs"),
            callbacks=[ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True, every_n_train_steps=cfg.val_every),
                       RichProgressBar()],
            val_check_interval=cfg.val_every if val is not None else None,
            check_val_every_n_epoch=None, limit_val_batches=1.0 if val is not None else 0,
            num_sanity_val_steps=0, log_every_n_steps=10, enable_model_summary=False,
        )
        trainer.fit(module, data, val, ckpt_path=str(last) if last.exists() else None)
        steps = trainer.global_step
        if trainer.global_rank != 0:
            return {}
    else:
        # Re-export a finished run: its weights and its record, never the untrained initial codec.
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        module.load_state_dict(ckpt["state_dict"])
        steps = int(ckpt.get("global_step", 0))
    seconds = round(time.time() - t0, 1)
    if export_only:  # the training time is the earlier export's (when there is one), not this re-export's
        previous = out / "export" / f"{cfg.name}.json"
        try:
            seconds = json.loads(previous.read_text())["training"]["seconds"]
        except (OSError, ValueError, KeyError, TypeError):
            seconds = None
    training = {"recipe": "walloc-audio train", "config": portable_config(cfg), "steps": steps,
                "seconds": seconds, "tracks": len(train_tracks),
                "minutes": round(sum(t.shape[1] for t in train_tracks) / cfg.sample_rate / 60, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "torch_threads": torch.get_num_threads()}
    return export(module.codec, cfg, train_tracks, val_tracks, out / "export", training, log)
