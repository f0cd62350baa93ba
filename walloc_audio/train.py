"""Train a WaLLoC codec on music with PyTorch Lightning, then export it to the registry.

Recipe (``walloc-audio train CONFIG.yaml``; ``recipes/codec/`` has the shipped configs):

1. read the training tracks (a list file or a folder; unreadable, mono, short
   or silent files are skipped and counted) and optionally a MUSDB-style stem
   folder whose stems are remixed into new mixtures;
2. initialise the encoder and the decoder's linear path at the PCA solution
   (:mod:`walloc_audio.linear_fit`) -- the nonlinear part of the decoder starts
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
import os
import random
import resource
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .audio import find_audio
from .entropy import count_symbols, fit_context_model, fit_probabilities
from .errors import WallocError
from .linear_fit import coefficient_covariance, iter_clips, linear_codec, paper_psnr
from .model import CodecConfig, WallocCodec


@dataclass
class TrainConfig:
    """One training run. Every field can be set in the YAML file or with ``--set key=value``."""

    name: str = "stereo-5x"
    description: str = ""
    # codec
    J: int = 8
    latent_dim: int = 108
    channels: int = 2
    sample_rate: int = 44100
    decoder_width: int = 128
    decoder_depth: int = 3
    decoder_kernel: int = 3
    lookahead_frames: int = 0
    step: float = 0.084  # quantizer step of the latents: sets the rate
    init: str = "pca"  # pca | random (random orthonormal encoder, zero decoder: for ablations and tests)
    entropy: str = "context"
    # data
    train: str = ""  # a file listing tracks, or a folder of audio
    val: str = ""
    stems: str = ""  # optional MUSDB-style folder (train/*/{drums,bass,other,vocals}.wav) remixed into crops
    stem_mix_probability: float = 0.5
    max_track_seconds: float = 240.0
    min_track_seconds: float = 2.0
    crop_frames: int = 64
    gain_db: list = field(default_factory=lambda: [-20.0, 0.0])
    # optimisation
    batch_size: int = 16
    lr: float = 3e-4
    encoder_lr: float = 1e-5  # 0 freezes the (PCA) encoder
    warmup_steps: int = 200  # linear learning-rate warm-up
    quantization: str = "noise"  # noise | round (straight-through)
    mrstft_weight: float = 0.0
    rate_weight: float = 0.0  # weight of the rate proxy (bits per latent) against the normalised MSE
    max_steps: int = 20000
    max_time: str = "00:02:30:00"  # DD:HH:MM:SS, Lightning's format
    val_every: int = 250
    val_seconds: float = 20.0
    seed: int = 0
    # fitting
    pca_seconds: float = 90.0
    entropy_seconds: float = 90.0
    export_val_seconds: float = 60.0

    @classmethod
    def load(cls, path: str | None, overrides: list[str] = ()) -> "TrainConfig":
        import yaml

        d: dict = {}
        if path:
            try:
                d = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise WallocError(f"cannot read training config {path}: {exc}") from None
            if not isinstance(d, dict):
                raise WallocError(f"{path}: a training config is a mapping of keys to values")
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise WallocError(f"--set expects key=value, got {item!r}")
            d[key.strip()] = yaml.safe_load(value)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise WallocError(f"unknown training config keys: {', '.join(unknown)}")
        for key in ("train", "val", "stems"):  # paths may name $VARIABLES (e.g. $WALLOC_DATA)
            if isinstance(d.get(key), str):
                d[key] = os.path.expandvars(d[key])
        cfg = cls(**d)
        if cfg.init not in ("pca", "random"):
            raise WallocError("init must be 'pca' or 'random'")
        if cfg.quantization not in ("noise", "round"):
            raise WallocError("quantization must be 'noise' or 'round'")
        if not cfg.train:
            raise WallocError("no training data: set `train:` to a track list or a folder")
        return cfg

    def codec_config(self) -> CodecConfig:
        return CodecConfig(channels=self.channels, sample_rate=self.sample_rate, J=self.J, latent_dim=self.latent_dim,
                           decoder_width=self.decoder_width if self.decoder_depth else 0,
                           decoder_depth=self.decoder_depth, decoder_kernel=self.decoder_kernel,
                           lookahead_frames=self.lookahead_frames, entropy=self.entropy)


# -- data -------------------------------------------------------------------------------------------

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


# -- losses -----------------------------------------------------------------------------------------

def normalised_mse_db(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-clip error-to-signal ratio in dB, averaged over the batch.

    Averaging dB rather than errors weighs a quiet clip like a loud one -- the
    per-clip SNR and the paper's per-clip PSNR reward exactly that; a plain MSE
    would only train on the loudest clips of a batch.
    """
    err = (y - x).pow(2).mean(dim=(1, 2))
    return (10 * torch.log10((err + 1e-12) / (x.pow(2).mean(dim=(1, 2)) + 1e-9))).mean()


def mrstft_loss(y: torch.Tensor, x: torch.Tensor, sizes=(512, 1024, 2048)) -> torch.Tensor:
    """Multi-resolution STFT loss: spectral convergence + log-magnitude L1, averaged over sizes."""
    y2, x2 = y.reshape(-1, y.shape[-1]), x.reshape(-1, x.shape[-1])
    total = y.new_zeros(())
    for n in sizes:
        win = torch.hann_window(n, device=y.device)
        Y = torch.stft(y2, n, n // 4, window=win, return_complex=True).abs()
        X = torch.stft(x2, n, n // 4, window=win, return_complex=True).abs()
        sc = torch.linalg.norm(Y - X) / (torch.linalg.norm(X) + 1e-7)
        total = total + sc + (torch.log(Y + 1e-5) - torch.log(X + 1e-5)).abs().mean()
    return total / len(sizes)


class LaplaceRate(torch.nn.Module):
    """Differentiable rate proxy: bits of noisy companded latents under a per-channel Laplace."""

    def __init__(self, channels: int):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b = self.log_scale.exp()[:, None]

        def cdf(t):
            return 0.5 + 0.5 * torch.sign(t) * (1 - torch.exp(-t.abs() / b))

        p = cdf(v + 0.5) - cdf(v - 0.5)
        return -torch.log2(p.clamp_min(1e-9)).mean()


# -- Lightning module -------------------------------------------------------------------------------

def _lightning():
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
    pl = _lightning()
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


def _val_batch(tracks: list[torch.Tensor], cfg: TrainConfig) -> torch.Tensor:
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


# -- driver -----------------------------------------------------------------------------------------

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


def fit_entropy(codec: WallocCodec, tracks: list[torch.Tensor], cfg: TrainConfig, kind: str | None = None,
                centroids: bool | None = None) -> dict:
    """Entropy model for ``codec`` from the first ``entropy_seconds`` of each training track.

    ``kind``: "context" or "static" (default: the codec's); ``centroids``: keep the
    context model's bin centroids (default: only for a linear decoder).
    """
    kind = kind or codec.config.entropy
    if centroids is None:
        centroids = codec.decoder.net is None
    n = int(cfg.entropy_seconds * cfg.sample_rate) // codec.config.frame * codec.config.frame
    symbols, values = [], []
    bn = codec.bottleneck
    with torch.no_grad():
        for t in tracks:
            x = t[None, :, : min(n, t.shape[1] // codec.config.frame * codec.config.frame)].float()
            y = codec.analyze(x)[0]
            symbols.append(bn.symbols(y).numpy())
            values.append(bn.companded(y).numpy())
    if kind == "context":
        scales, offsets, thresholds = fit_context_model(symbols, values, max_symbol=bn.max_symbol)
        if not centroids:
            # A nonlinear decoder is trained on the rounded symbols themselves and learns its own
            # reconstruction; shifting its inputs to the bin centroids would feed it what it never saw.
            offsets = np.zeros_like(offsets)
        return {"context": (scales, offsets, thresholds)}
    counts = sum(count_symbols(torch.from_numpy(q), bn.max_symbol) for q in symbols)
    return {"probabilities": fit_probabilities(counts)}


def measure(model, tracks, seconds: float, visqol_seconds: float | None = None, jobs: int = 1) -> dict:
    """kbps, bits/latent, SNR and paper PSNR through the real bitstream (encode -> bytes -> decode).

    ``tracks``: ``[C, T]`` arrays or tensors; the first ``seconds`` of each, at the default
    quality of the model's default bitstream, 64-frame packets, container framing counted.
    Every model's card (``walloc-audio models``) is measured by this function; with
    ``visqol_seconds`` it also scores ViSQOL on the middle of each track (:mod:`walloc_audio.visqol`)."""
    from .bitstream import PACKET_HEADER_BYTES
    from .codec_stream import OutputTrim, PacketDecoder, PacketEncoder

    cfg = model.config
    n = int(seconds * cfg.sample_rate)
    bits = frames = dur = 0.0
    se = en = 0.0
    psnrs, scores = [], []
    scorer = None
    if visqol_seconds:
        from .visqol import Scorer

        scorer = Scorer(visqol_seconds, jobs)
    try:
        for t in tracks:
            x = np.ascontiguousarray(np.asarray(t)[:, :n], dtype=np.float32)
            enc = PacketEncoder(model, 64, 4)
            packets = enc.push(x) + enc.flush()
            dec = PacketDecoder(model, enc.version, enc.bands)
            trim = OutputTrim.for_stream(cfg, 64, cfg.channels)
            pieces = [trim.release(trim.align(p)) for p in dec.decode_many(packets)]
            pieces.append(trim.finish(x.shape[1], strict=False))
            y = np.concatenate(pieces, axis=1)[:, : x.shape[1]].astype(np.float64)
            bits += 8 * sum(len(p) + PACKET_HEADER_BYTES for _, p in packets)
            frames += enc.frames_out
            dur += x.shape[1] / cfg.sample_rate
            se += float(((y - x) ** 2).sum())
            en += float((x.astype(np.float64) ** 2).sum())
            psnrs.append(paper_psnr(x.astype(np.float64), y))
            if scorer is not None:
                scores.append(scorer.submit(x, y, cfg.sample_rate))
        got = [v for v, _ in (f.result() for f in scores) if v is not None]
    finally:  # the ViSQOL workers go away whatever happened
        if scorer is not None:
            scorer.close()
    visqol = {}
    if scorer is not None:
        visqol = {"visqol": round(float(np.mean(got)), 3) if got else None, "visqol_tracks": len(got),
                  "visqol_seconds": visqol_seconds}
    return {"tracks": len(tracks), "seconds": round(dur, 1), "bitstream": enc.version, **visqol,
            **({"quality": enc.rate.quality} if enc.version == 2 else {}),
            "kbps": round(bits / dur / 1000, 3),
            "bits_per_latent": round(bits / (frames * cfg.latent_dim), 4),
            "snr_db": round(10 * math.log10(en / max(se, 1e-20)), 3), "psnr_paper_db": round(float(np.mean(psnrs)), 3)}


def export(codec: WallocCodec, cfg: TrainConfig, train_tracks, val_tracks, folder: Path, training: dict,
           log=print) -> dict:
    """Fit the entropy model, write the model files into ``folder``, measure them on validation tracks."""
    from .pretrained import load_model, save_model

    codec = codec.cpu().eval()
    t0 = time.time()
    ent = fit_entropy(codec, train_tracks, cfg)
    log(f"entropy model fitted in {time.time() - t0:.0f} s")
    desc = cfg.description or (f"WaLLoC J={cfg.J}, {cfg.latent_dim} latents, "
                               f"{'nonlinear' if cfg.decoder_depth else 'linear'} decoder, {cfg.entropy} entropy model")
    info = save_model(folder, cfg.name, codec, description=desc, extra={"kind": "trained", "training": training},
                      **ent)
    # The version-2 (forward-adaptive) entropy model, fitted on the same training music.
    from .fit_adaptive import fit_codec_v2
    from .pretrained import save_adaptive

    n = int(cfg.entropy_seconds * cfg.sample_rate)
    coder, record = fit_codec_v2(codec, [t[:, :n].numpy() for t in train_tracks],
                                 [t[:, : int(cfg.export_val_seconds * cfg.sample_rate)].numpy() for t in val_tracks],
                                 centroids=codec.decoder.net is None, log=log)
    info = save_adaptive(folder, cfg.name, coder, record)
    model = load_model(cfg.name, expected_sha256=info["sha256"], folder=folder)
    if val_tracks:
        info["validation"] = measure(model, val_tracks, cfg.export_val_seconds)
        (folder / f"{cfg.name}.json").write_text(json.dumps(info, indent=2) + "\n")
        log(f"validation through the bitstream: {info['validation']}")
    return info


def portable_config(cfg: TrainConfig) -> dict:
    """The config as stored with a model: data paths under ``$WALLOC_DATA`` written that way,
    others reduced to their last two components (no machine's paths in shipped files)."""
    d = asdict(cfg)
    root = os.environ.get("WALLOC_DATA", "")
    for key in ("train", "val", "stems"):
        v = d.get(key) or ""
        if root and v.startswith(root.rstrip("/") + "/"):
            d[key] = "$WALLOC_DATA/" + v[len(root.rstrip("/")) + 1 :]
        elif v:
            d[key] = "/".join(Path(v).parts[-2:])
    return d


def run(cfg: TrainConfig, out: Path, devices: str = "auto", num_nodes: int = 1, accelerator: str = "auto",
        export_only: bool = False, log=print) -> dict:
    """Train (resuming from ``out/checkpoints/last.ckpt`` if present) and export into ``out/export``."""
    import yaml

    last = out / "checkpoints" / "last.ckpt"
    if export_only and not last.exists():
        raise WallocError(f"--export-only needs a checkpoint and there is none at {last} (train first)")
    pl = _lightning()
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
        vb = _val_batch(val_tracks, cfg)
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
