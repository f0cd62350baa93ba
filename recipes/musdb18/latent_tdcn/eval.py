#!/usr/bin/env python3
"""Stage 3: separate the test tracks with a trained model and score them with museval.

    python eval.py --conf exp/TAG/conf.yml --exp exp/TAG --model latent [--jobs 2]
Writes exp/TAG/MODEL/scores.json (per track and aggregated, MUSDB convention).
``--model oracle`` needs no training: every true stem through the codec alone, the
ceiling the codec puts on any latent-domain separator.
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

import torch
import yaml
from safetensors.torch import load_file

from separation.data import open_musdb
from separation.evaluate import (DISCLAIMER, aggregate, codec_oracle, latent_separate, score_estimates, score_track,
                                 waveform_separate)
from separation.models import WallocFrontEnd
from separation.train import make_network
from walloc_audio.pretrained import load_model

_state: dict = {}


def setup(conf: dict, exp: Path, kind: str, threads: int | None = None) -> None:
    """Load the trained model and the test tracks into this process."""
    if threads:
        torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    tracks = open_musdb(conf["data"]["root"], "test")
    if conf["data"].get("eval_tracks"):
        tracks = tracks[: conf["data"]["eval_tracks"]]
    codec = load_model(conf["codec"]["model"]) if kind in ("latent", "oracle") else None
    if kind == "oracle":
        front = WallocFrontEnd(codec)
        _state.update(tracks=tracks, oracle=lambda track: codec_oracle(front, track))
        return
    net = make_network(kind, conf, codec)
    net.load_state_dict(load_file(str(exp / kind / "model.safetensors")))
    net.eval()
    _state.update(tracks=tracks, separate=latent_separate(WallocFrontEnd(codec), net) if kind == "latent"
                  else waveform_separate(net))


def score(i: int) -> tuple[dict, float]:
    t, track = time.perf_counter(), _state["tracks"][i]
    if "oracle" in _state:
        return score_estimates(track, _state["oracle"](track)), time.perf_counter() - t
    return score_track(track, _state["separate"]), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--model", choices=["latent", "waveform", "oracle"], required=True)
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
