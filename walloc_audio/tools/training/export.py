"""After training: fit the entropy models on training latents, measure through the real bitstream, write the registry files."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from walloc_audio.entropy import count_symbols, fit_context_model, fit_probabilities
from walloc_audio.metrics import paper_psnr
from walloc_audio.tools.model import WallocCodec
from walloc_audio.tools.training.config import TrainConfig



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


def measure(model, tracks, seconds: float, visqol_seconds: float | None = None, jobs: int = 1,
            fill: bool = True) -> dict:
    """kbps, bits/latent, SNR and paper PSNR through the real bitstream (encode -> bytes -> decode).

    ``tracks``: ``[C, T]`` arrays or tensors; the first ``seconds`` of each, at the default
    quality of the model's default bitstream, 64-frame packets, container framing counted; on
    version 2 with the noise fill (``fill``) as ``walloc-audio encode`` writes files by default.
    Every model's card (``walloc-audio models``) is measured by this function; with
    ``visqol_seconds`` it also scores ViSQOL on the middle of each track (:mod:`walloc_audio.tools.evaluation.visqol`)."""
    from walloc_audio.bitstream import PACKET_HEADER_BYTES
    from walloc_audio.codec_stream import OutputTrim, PacketDecoder, PacketEncoder
    from walloc_audio.noisefill import FillSpec

    cfg = model.config
    n = int(seconds * cfg.sample_rate)
    bits = frames = dur = 0.0
    se = en = 0.0
    psnrs, scores = [], []
    scorer = None
    if visqol_seconds:
        from walloc_audio.tools.evaluation.visqol import Scorer

        scorer = Scorer(visqol_seconds, jobs)
    try:
        for t in tracks:
            x = np.ascontiguousarray(np.asarray(t)[:, :n], dtype=np.float32)
            spec = FillSpec.for_frame(cfg.frame) if fill and model.adaptive is not None else None  # v2 only
            enc = PacketEncoder(model, 64, 4, fill=spec)
            packets = enc.push(x) + enc.flush()
            dec = PacketDecoder(model, enc.version, enc.bands, fill=enc.fill)
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
            "fill": enc.fill is not None,
            **({"quality": enc.rate.quality} if enc.version == 2 else {}),
            "kbps": round(bits / dur / 1000, 3),
            "bits_per_latent": round(bits / (frames * cfg.latent_dim), 4),
            "snr_db": round(10 * math.log10(en / max(se, 1e-20)), 3), "psnr_paper_db": round(float(np.mean(psnrs)), 3)}


def export(codec: WallocCodec, cfg: TrainConfig, train_tracks, val_tracks, folder: Path, training: dict,
           log=print) -> dict:
    """Fit the entropy model, write the model files into ``folder``, measure them on validation tracks."""
    from walloc_audio.pretrained import load_model, save_model

    codec = codec.cpu().eval()
    t0 = time.time()
    ent = fit_entropy(codec, train_tracks, cfg)
    log(f"entropy model fitted in {time.time() - t0:.0f} s")
    desc = cfg.description or (f"WaLLoC J={cfg.J}, {cfg.latent_dim} latents, "
                               f"{'nonlinear' if cfg.decoder_depth else 'linear'} decoder, {cfg.entropy} entropy model")
    info = save_model(folder, cfg.name, codec, description=desc, extra={"kind": "trained", "training": training},
                      **ent)
    # The version-2 (forward-adaptive) entropy model, fitted on the same training music.
    from walloc_audio.tools.training.fit_adaptive import fit_codec_v2
    from walloc_audio.pretrained import save_adaptive

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
