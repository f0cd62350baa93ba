"""Budgeted training with a learning curve: validation SDR against training time, for any model.

Every model of the comparison trains through :func:`fit`: the same optimiser
(Adam, gradient norm clipped), the same batch size, the same budget -- counted
on one clock for all of them -- and, every ``eval_every`` seconds of that
clock, the same validation: whole validation tracks separated by the model
and scored against the true PCM stems (:func:`global_sdr`, one figure per
stem over the whole excerpt; cheaper than museval's framewise medians, which
stage 3 computes on the test set). Validation time is not charged to the
budget. The curve (``curve.json``), the best and the last weights
(safetensors) are written as the run goes, so an interrupted run keeps what it
learned.

Clocks: ``"cpu"`` is this process's CPU time (user + system), the fair budget
when several runs share one machine (each run is given one thread, and what
else runs on the machine does not eat its budget); ``"wall"`` is the wall
clock (GPUs, or one run alone).
"""

from __future__ import annotations

import json
import math
import resource
import signal
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from safetensors.torch import save_file

from .data import STEMS

SILENT_RMS = 1e-4


def global_sdr(ref: np.ndarray, est: np.ndarray) -> float | None:
    """``10 log10(|s|^2 / |s - s_hat|^2)`` over a whole excerpt; None for a silent reference."""
    ref = np.asarray(ref, np.float64)
    if math.sqrt(float(np.mean(ref**2))) < SILENT_RMS:
        return None
    err = float(np.sum((ref - np.asarray(est, np.float64)) ** 2))
    return 10.0 * math.log10(float(np.sum(ref**2)) / max(err, 1e-20))


def score_set(refs: Sequence[np.ndarray], ests: Sequence[np.ndarray]) -> dict:
    """Mean global SDR per stem over tracks (silent references skipped) and their average.

    ``refs`` / ``ests``: per track ``[S, C, T]``."""
    per = {s: [] for s in STEMS}
    for r, e in zip(refs, ests):
        for i, s in enumerate(STEMS):
            v = global_sdr(r[i], e[i])
            if v is not None:
                per[s].append(v)
    stems = {s: float(np.mean(v)) if v else None for s, v in per.items()}
    vals = [v for v in stems.values() if v is not None]
    return {"stems": stems, "sdr": float(np.mean(vals)) if vals else None}


class _Clock:
    def __init__(self, kind: str):
        if kind not in ("cpu", "wall"):
            raise ValueError(f"clock must be cpu | wall, got {kind!r}")
        self.kind = kind

    def __call__(self) -> float:
        return time.process_time() if self.kind == "cpu" else time.perf_counter()


def fit(model: torch.nn.Module, loss_fn: Callable, batches: Callable[[int], Iterable], *, budget_seconds: float,
        eval_every: float, validate: Callable[[torch.nn.Module], dict], out_dir: Path, lr: float = 1e-3,
        clip: float = 5.0, clock: str = "cpu", device: str = "cpu", max_steps: int | None = None,
        lr_patience: int = 0, lr_factor: float = 0.5, lr_min: float = 1e-5,
        log: Callable[[str], None] = print) -> dict:
    """Train ``model`` for ``budget_seconds`` of ``clock``; returns the run's figures.

    Args:
        loss_fn: ``(model, mixture, stems) -> loss``.
        batches: ``epoch -> iterable of (mixture, stems)`` (a DataLoader).
        validate: ``model -> {"sdr": ..., "stems": {...}}`` on the validation set.
        out_dir: gets ``curve.json``, ``best.safetensors``, ``last.safetensors``, ``figures.json`` and
            ``resume.pt`` (optimiser state and counters): a rerun with the same ``out_dir``
            resumes from the last validation, so a longer budget continues a finished run.
        lr_patience: with N > 0, the learning rate is multiplied by ``lr_factor`` (down to ``lr_min``)
            after N validations in a row without a new best SDR (Open-Unmix's own schedule,
            counted in validations rather than epochs); 0 keeps it constant.
    Ctrl-C (or SIGTERM) ends the run early at the next step, keeping everything written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    tick = _Clock(clock)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    curve: list[dict] = []
    best = -math.inf
    steps = examples = epoch = 0
    stale = 0  # validations since the last new best (the plateau schedule)
    trained = 0.0  # seconds of the budget clock spent training (validation excluded)
    wall0 = time.perf_counter()
    losses: list[float] = []
    resume = out_dir / "resume.pt"
    if resume.exists():  # a longer budget (or a crash) continues where the last validation left off
        from safetensors.torch import load_file

        state = torch.load(resume, map_location=device, weights_only=True)
        model.load_state_dict(load_file(str(out_dir / "last.safetensors"), device=str(device)))
        opt.load_state_dict(state["optimizer"])
        steps, examples, epoch, trained = int(state["steps"]), int(state["examples"]), int(state["epoch"]), \
            float(state["trained"])
        best = float(state["best"])
        stale = int(state.get("stale", 0))
        curve = json.loads((out_dir / "curve.json").read_text())
        wall0 -= curve[-1]["wall_seconds"] if curve else 0.0
        log(f"resuming at step {steps} ({trained / 60:.1f} min trained)")

    def evaluate() -> None:
        nonlocal best, stale
        t = time.perf_counter()
        model.eval()
        with torch.no_grad():
            v = validate(model)
        model.train()
        row = {"train_seconds": round(trained, 1), "steps": steps, "examples": examples,
               "wall_seconds": round(time.perf_counter() - wall0, 1),
               "loss": float(np.mean(losses)) if losses else None, "val_sdr": v["sdr"], "val_stems": v["stems"],
               "val_seconds": round(time.perf_counter() - t, 1), "lr": opt.param_groups[0]["lr"]}
        losses.clear()
        curve.append(row)
        (out_dir / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")
        state = {k: t_.detach().cpu().contiguous() for k, t_ in model.state_dict().items()}
        save_file(state, str(out_dir / "last.safetensors"))
        if v["sdr"] is not None and v["sdr"] > best:
            best, stale = v["sdr"], 0
            save_file(state, str(out_dir / "best.safetensors"))
        elif steps:
            stale += 1
            if lr_patience > 0 and stale >= lr_patience:
                stale = 0
                for group in opt.param_groups:
                    group["lr"] = max(group["lr"] * lr_factor, lr_min)
                log(f"no new best for {lr_patience} validations: learning rate {opt.param_groups[0]['lr']:.3g}")
        torch.save({"optimizer": opt.state_dict(), "steps": steps, "examples": examples, "epoch": epoch,
                    "trained": trained, "best": best, "stale": stale}, resume)
        log(f"[{trained / 60:6.1f} min] step {steps} loss {row['loss'] if row['loss'] is not None else float('nan'):.4g}"
            f" val SDR {v['sdr'] if v['sdr'] is not None else float('nan'):.2f} dB ({row['val_seconds']:.0f} s)")

    try:
        if not curve:
            evaluate()
        next_eval = (math.floor(trained / eval_every) + 1) * eval_every if eval_every > 0 else math.inf
        model.train()
        while trained < budget_seconds and not stop["now"] and (max_steps is None or steps < max_steps):
            it = iter(batches(epoch))
            while True:
                t = tick()  # reading and augmenting the batch is part of the budget
                batch = next(it, None)
                if batch is None:
                    trained += tick() - t
                    break
                mix, stems = batch[0].to(device), batch[1].to(device)
                loss = loss_fn(model, mix, stems)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                opt.step()
                losses.append(float(loss.detach()))
                trained += tick() - t
                steps += 1
                examples += mix.shape[0]
                if trained >= next_eval:
                    evaluate()
                    next_eval += eval_every
                if trained >= budget_seconds or stop["now"] or (max_steps is not None and steps >= max_steps):
                    break
            epoch += 1
        if not curve or curve[-1]["steps"] != steps:
            evaluate()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    figures = {"steps": steps, "examples": examples, "epochs": epoch, "train_seconds": trained, "clock": clock,
               "examples_per_second": examples / max(trained, 1e-9),
               "wall_seconds": time.perf_counter() - wall0, "best_val_sdr": best if best > -math.inf else None,
               "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "interrupted": stop["now"]}
    (out_dir / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
