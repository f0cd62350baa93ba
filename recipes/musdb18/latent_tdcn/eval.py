#!/usr/bin/env python3
"""Stage 3: separate the test tracks with a trained model and score them with museval.

    python eval.py --conf exp/TAG/conf.yml --exp exp/TAG --model latent [--jobs 2]
Writes exp/TAG/MODEL/scores.json (per track and aggregated, MUSDB convention).
Models: the trained ``latent`` / ``latent-float`` (on the test mixtures' .wlc latents: what a
receiver has), ``umx`` and ``waveform`` (on PCM mixtures), and two that need no training:
``oracle``, every true stem through the codec alone (decoded from its .wlc: the ceiling the
codec puts on any latent-domain separator), ``irm``, the ideal ratio mask of the coded stems'
latents applied to the coded mixture's (the masker's own ceiling: the best masks in [0, 1]),
``irm-packets``, the same mask on the wavelet packets the decoder makes of those latents,
and ``floor``, every stem estimated as a quarter of the mixture (what doing nothing scores).
``--jobs N`` scores N tracks at a time in worker processes (one torch thread each);
museval dominates the time (~40 s per minute of audio on one core).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from separation.data import STEMS, open_musdb
from separation.evaluate import (DISCLAIMER, aggregate, ideal_ratio_masks, packet_ratio_masks, score_estimates,
                                 score_track, waveform_separate)
from separation.models import WallocFrontEnd
from separation.runs import network_and_loss
from separation.separator import ChunkedMasker, TorchMasker
from separation.shards import iter_tracks, open_sources
from separation.train import make_network
from walloc_audio.pretrained import load_model

MODELS = ("latent", "latent-float", "umx", "waveform", "oracle", "irm", "irm-packets", "floor")
_state: dict = {}


def _weights(exp: Path, kind: str) -> dict:
    """fit.py's best weights (the Lightning path's model.safetensors for older runs)."""
    for name in ("best.safetensors", "model.safetensors"):
        if (exp / kind / name).exists():
            return load_file(str(exp / kind / name))
    raise SystemExit(f"{exp / kind}: no trained weights (run stage 2)")


def setup(conf: dict, exp: Path, kind: str, threads: int | None = None) -> None:
    """Load the trained model and the test tracks into this process."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    tracks = open_musdb(conf["data"]["root"], "test")
    if conf["data"].get("eval_tracks"):
        tracks = tracks[: conf["data"]["eval_tracks"]]
    _state["tracks"] = tracks
    if kind == "floor":
        _state["estimate"] = lambda track: {s: track.audio / len(STEMS) for s in STEMS}
        return
    if kind == "umx":
        net, _ = network_and_loss(kind, conf, None)
        net.load_state_dict(_weights(exp, kind))
        u = conf["umx"]
        sep = net.separator(u.get("niter", 1))

        def run(mix: np.ndarray) -> dict:
            est = sep(torch.from_numpy(np.ascontiguousarray(mix.T, dtype=np.float32))[None])[0, ..., : len(mix)]
            return {s: est[i].T.numpy().astype(np.float64) for i, s in enumerate(STEMS)}
        _state["separate"] = run
        return
    if kind == "waveform":
        net = make_network(kind, conf)
        net.load_state_dict(_weights(exp, kind))
        _state["separate"] = waveform_separate(net.eval())
        return
    # Latent models and the codec's ceiling read the test set's .wlc files: latents, never PCM.
    codec = load_model(conf["codec"]["model"])
    front = WallocFrontEnd(codec)
    rows = {"oracle": STEMS, "irm": STEMS + ("mixture",), "irm-packets": STEMS + ("mixture",)}.get(kind, ("mixture",))
    coded = {t.name: t for t in iter_tracks(open_sources(exp / "wlc" / "test"), codec, rows=rows)}
    missing = [t.name for t in tracks if t.name not in coded]
    if missing:
        raise SystemExit(f"{exp / 'wlc' / 'test'}: no decodable .wlc for {missing} (rerun stage 1)")
    if kind in ("oracle", "irm", "irm-packets"):
        def estimate(track) -> dict:
            c = coded[track.name]
            z = np.stack([c.latents[s] for s in STEMS])
            if kind == "irm-packets":
                y = packet_ratio_masks(front, z, c.latents["mixture"], c.samples)
                return {s: y[i].T.astype(np.float64) for i, s in enumerate(STEMS)}
            if kind == "irm":
                z = ideal_ratio_masks(z, c.latents["mixture"])
            y = front.decode(torch.from_numpy(z)[None], c.samples)[0]
            return {s: y[i].T.numpy().astype(np.float64) for i, s in enumerate(STEMS)}
        _state["estimate"] = estimate
        return
    net = make_network("latent", conf, codec)
    net.load_state_dict(_weights(exp, kind))
    run = TorchMasker(net)

    def estimate(track) -> dict:
        z = coded[track.name].latents["mixture"]
        m = ChunkedMasker(run, codec.config.latent_dim)
        est = np.concatenate(list(m.push(z)) + list(m.flush()), axis=2)  # [S, L, K]
        y = front.decode(torch.from_numpy(est)[None], coded[track.name].samples)[0]
        return {s: y[i].T.numpy().astype(np.float64) for i, s in enumerate(STEMS)}
    _state["estimate"] = estimate


def score(i: int) -> tuple[dict, float]:
    t, track = time.perf_counter(), _state["tracks"][i]
    if "estimate" in _state:
        return score_estimates(track, _state["estimate"](track)), time.perf_counter() - t
    return score_track(track, _state["separate"]), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--model", choices=MODELS, required=True)
    ap.add_argument("--jobs", type=int, default=1, help="tracks scored at a time (worker processes)")
    args = ap.parse_args()
    conf = yaml.safe_load(args.conf.read_text())
    setup(conf, args.exp, args.model)
    tracks = _state["tracks"]
    t0 = time.perf_counter()
    if args.jobs > 1:
        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=setup,
                                   initargs=(conf, args.exp, args.model, 1))
        results = pool.map(score, range(len(tracks)))
    else:
        pool, results = None, map(score, range(len(tracks)))
    scores = []
    try:
        for track, (s, seconds) in zip(tracks, results):
            scores.append(s)
            sdr = {k: round(v["SDR"], 2) for k, v in s["stems"].items()}
            if s.get("unscorable"):
                sdr["not scored"] = "no 1-s window where every stem sounds: " + ", ".join(s["unscorable"])
            print(f"{track.name}: {sdr} ({seconds:.1f} s)", flush=True)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    result = {"model": args.model, "aggregate": aggregate(scores), "tracks": scores,
              "eval_seconds": time.perf_counter() - t0, "note": DISCLAIMER}
    (args.exp / args.model).mkdir(parents=True, exist_ok=True)
    (args.exp / args.model / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["aggregate"], indent=2))


if __name__ == "__main__":
    main()
