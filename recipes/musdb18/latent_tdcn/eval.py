#!/usr/bin/env python3
"""Stage 3: separate the test tracks with a trained model and score them with museval.

    python eval.py --conf exp/TAG/conf.yml --exp exp/TAG --model latent
Writes exp/TAG/MODEL/scores.json (per track and aggregated, MUSDB convention).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from separation.data import open_musdb
from separation.evaluate import DISCLAIMER, aggregate, latent_separate, score_track, waveform_separate
from separation.models import WallocFrontEnd
from separation.train import make_network
from walloc_audio.pretrained import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--model", choices=["latent", "waveform"], required=True)
    args = ap.parse_args()
    conf = yaml.safe_load(args.conf.read_text())
    out = args.exp / args.model
    codec = load_model(conf["codec"]["model"]) if args.model == "latent" else None
    net = make_network(args.model, conf, codec)
    net.load_state_dict(load_file(str(out / "model.safetensors")))
    net.eval()
    torch.set_grad_enabled(False)
    separate = (latent_separate(WallocFrontEnd(codec), net) if args.model == "latent" else waveform_separate(net))
    tracks = open_musdb(conf["data"]["root"], "test")
    if conf["data"].get("eval_tracks"):
        tracks = tracks[: conf["data"]["eval_tracks"]]
    scores, t0 = [], time.perf_counter()
    for track in tracks:
        t = time.perf_counter()
        scores.append(score_track(track, separate))
        sdr = {k: round(v["SDR"], 2) for k, v in scores[-1]["stems"].items()}
        print(f"{track.name}: {sdr} ({time.perf_counter() - t:.1f} s)", flush=True)
    result = {"model": args.model, "aggregate": aggregate(scores), "tracks": scores,
              "eval_seconds": time.perf_counter() - t0, "note": DISCLAIMER}
    (out / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["aggregate"], indent=2))


if __name__ == "__main__":
    main()
