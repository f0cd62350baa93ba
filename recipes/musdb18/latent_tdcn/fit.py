#!/usr/bin/env python3
"""Stage 2: train one model of the comparison on a budget, with its learning curve.

    python fit.py --conf exp/TAG/conf.yml --exp exp/TAG --model latent|latent-float|umx|waveform [--threads 1]
        [--init WEIGHTS]
Writes exp/TAG/MODEL/: curve.json (validation SDR against training time), best.safetensors,
last.safetensors, net.json (what builds the network), figures.json (steps, examples/s, peak RSS).
The budget is training.budget_minutes on training.clock (cpu: this process's CPU time; wall).
``--init`` starts from trained weights (another run's best.safetensors, or a shipped separator file for
the latent model) instead of a random network, with a fresh optimiser at training.lr: the curve's
minutes then count from that start, and figures.json names the file and its sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
import yaml

from separation.curve import fit
from separation.runs import KINDS, build_run
from walloc_audio.pretrained import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    ap.add_argument("--model", choices=KINDS, required=True)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (one per run when runs share a CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from these weights (safetensors of the same network); ignored when the run resumes")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    conf = yaml.safe_load(args.conf.read_text())
    tr = conf["training"]
    torch.manual_seed(tr["seed"])
    model = load_model(conf["codec"]["model"]) if args.model.startswith("latent") else None
    run = build_run(args.model, conf, args.exp, model)
    out = args.exp / args.model
    out.mkdir(parents=True, exist_ok=True)
    init = None
    if args.init is not None and not (out / "resume.pt").exists():
        init = start_from(run.net, args.init)
    (out / "net.json").write_text(json.dumps({"kind": args.model, "config": getattr(run.net, "config", None),
                                              "codec": conf["codec"]["model"]}, indent=1) + "\n")
    clock = tr.get("clock", "cpu") if args.device == "cpu" else "wall"
    figures = fit(run.net, run.loss, run.batches, budget_seconds=tr["budget_minutes"] * 60,
                  eval_every=tr.get("eval_every_minutes", 10) * 60, validate=run.validate, out_dir=out, lr=tr["lr"],
                  clock=clock, device=args.device, max_steps=tr.get("max_steps"),
                  lr_patience=tr.get("lr_patience", 0), lr_factor=tr.get("lr_factor", 0.5),
                  log=lambda s: print(f"{args.model}: {s}", flush=True))
    skips = getattr(run.data, "skips", None)
    figures.update(init=init if init is not None else _previous_init(out), kind=args.model,
                   threads=torch.get_num_threads(), device=args.device,
                   skipped_tracks=len(skips) if skips is not None else 0,
                   skipped=skips.items if skips is not None else [])
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def start_from(net: torch.nn.Module, path: Path) -> dict:
    """Load ``path``'s tensors into ``net`` (all of them, same shapes); returns what figures.json records."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = path.read_bytes()
        net.load_state_dict(load(data))
    except (OSError, SafetensorError) as exc:
        raise SystemExit(f"--init {path}: cannot read it ({exc})") from None
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        raise SystemExit(f"--init {path}: not weights of this network ({str(exc).splitlines()[0]})") from None
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), **prior_training(path)}


def prior_training(path: Path) -> dict:
    """What a shipped separator file says its weights were trained for (``prior_train_seconds``,
    ``prior_steps``), so an export of the continued run can state the total; ``{}`` for plain weights.
    Files exported before ``weights_at`` existed give their run's whole training time."""
    from separation.separator import SEPARATOR_FORMAT
    from walloc_audio.pretrained import safetensors_metadata

    try:
        meta = safetensors_metadata(path)
        if meta.get("format") != SEPARATOR_FORMAT:
            return {}
        extra = json.loads(meta.get("extra") or "{}")
    except (OSError, ValueError):
        return {}
    extra = extra if isinstance(extra, dict) else {}
    at, tr = extra.get("weights_at"), extra.get("training")
    at, tr = (at if isinstance(at, dict) else {}), (tr if isinstance(tr, dict) else {})
    if at.get("total_train_seconds") is not None:
        return {"prior_train_seconds": at["total_train_seconds"], "prior_steps": at.get("total_steps")}
    if tr.get("train_seconds") is not None:
        return {"prior_train_seconds": tr["train_seconds"], "prior_steps": tr.get("steps")}
    return {}


def _previous_init(out: Path):
    """A resumed run keeps the start its first part recorded."""
    try:
        return json.loads((out / "figures.json").read_text()).get("init")
    except (OSError, ValueError):
        return None


if __name__ == "__main__":
    main()
