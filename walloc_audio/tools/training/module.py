"""The Lightning module that trains a codec: optimisation step, validation figures, crop checks."""

from __future__ import annotations


import numpy as np
import torch

from walloc_audio.errors import WallocError
from walloc_audio.metrics import paper_psnr
from walloc_audio.tools.model import WallocCodec
from walloc_audio.tools.training.config import TrainConfig
from walloc_audio.tools.training.losses import LaplaceRate, mrstft_loss, normalised_mse_db



def import_lightning():
    try:
        import pytorch_lightning as pl
    except ImportError:  # pragma: no cover - the lock installs it
        raise WallocError("training needs pytorch-lightning (pip install 'walloc-audio[train]')") from None
    return pl


def warmup_samples(codec: WallocCodec) -> int:
    """Samples at the start of a crop whose reconstruction lacks history (zeros before the crop):
    the analysis filter's memory plus the decoder's receptive field. The loss skips them."""
    taps = codec.analysis_taps().shape[0]
    return (taps - 1 + codec.decoder.receptive_field) * codec.config.frame


def check_crop(cfg: TrainConfig, codec: WallocCodec) -> None:
    need = (warmup_samples(codec) + codec.config.delay_samples) // codec.config.frame + 16
    if cfg.crop_frames < need:
        raise WallocError(f"crop_frames={cfg.crop_frames} leaves nothing to train on: the analysis memory, the "
                          f"decoder's receptive field and the delay take {need - 16} frames; use >= {need}")


def make_module(cfg: TrainConfig, codec: WallocCodec):
    pl = import_lightning()
    check_crop(cfg, codec)

    class CodecModule(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.codec = codec
            self.rate = LaplaceRate(cfg.latent_dim)
            self.codec.bottleneck.log_step.requires_grad_(False)  # the step is the rate setting, not learned
            self.codec.encoder.requires_grad_(cfg.encoder_lr > 0)
            self.warmup, self.delay = warmup_samples(codec), codec.config.delay_samples

        def _losses(self, x: torch.Tensor, mode: str) -> dict:
            c = self.codec
            y_lat = c.analyze(x)
            v = c.bottleneck.companded(y_lat)
            zq = c.bottleneck(y_lat, mode)
            y = c.synthesize(zq)
            d, w = self.delay, self.warmup
            rec, ref = y[..., d + w :], x[..., w : x.shape[-1] - d]
            out = {"nmse_db": normalised_mse_db(rec, ref)}
            out["loss"] = out["nmse_db"]
            if cfg.mrstft_weight:
                out["mrstft"] = mrstft_loss(rec, ref)
                out["loss"] = out["loss"] + cfg.mrstft_weight * out["mrstft"]
            noisy = v + torch.empty_like(v).uniform_(-0.5, 0.5)
            # The rate model is always fitted; it only shapes the latents when rate_weight > 0.
            out["bits"] = self.rate(noisy if cfg.rate_weight else noisy.detach())
            out["loss"] = out["loss"] + (cfg.rate_weight or 1e-3) * out["bits"]
            out["rec"], out["ref"] = rec, ref
            return out

        def training_step(self, batch, _):
            out = self._losses(batch, cfg.quantization)
            self.log("nmse_db", out["nmse_db"].detach(), prog_bar=True)
            self.log("bits", out["bits"].detach(), prog_bar=True)
            return out["loss"]

        def validation_step(self, batch, _):
            out = self._losses(batch, "round")
            ref, rec = out["ref"].double(), out["rec"].double()
            psnr = np.mean([paper_psnr(r.cpu().numpy(), y.cpu().numpy()) for r, y in zip(ref, rec)])
            snr = 10 * torch.log10(ref.pow(2).sum() / (rec - ref).pow(2).sum().clamp_min(1e-20))
            self.log("val_psnr", float(psnr), prog_bar=True, batch_size=len(batch))
            self.log("val_snr", float(snr), prog_bar=True, batch_size=len(batch))

        def configure_optimizers(self):
            groups = [{"params": [p for n, p in self.codec.decoder.named_parameters()], "lr": cfg.lr},
                      {"params": list(self.rate.parameters()), "lr": 1e-2}]
            if cfg.encoder_lr > 0:
                groups.append({"params": [self.codec.encoder], "lr": cfg.encoder_lr})
            if self.codec.post_filter is not None:
                groups.append({"params": [self.codec.post_filter], "lr": cfg.lr})
            opt = torch.optim.AdamW(groups, weight_decay=0.0)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return CodecModule()


def validation_batch(tracks: list[torch.Tensor], cfg: TrainConfig) -> torch.Tensor:
    """Fixed validation crops: the middle ``val_seconds`` of each validation track, as recorded."""
    n = int(cfg.val_seconds * cfg.sample_rate) // 2**cfg.J * 2**cfg.J
    crops = []
    for t in tracks:
        if t.shape[1] >= n:
            s = (t.shape[1] - n) // 2
            crops.append(t[:, s : s + n])
    if not crops:
        return torch.zeros(0, cfg.channels, n)
    return torch.stack(crops).float()
