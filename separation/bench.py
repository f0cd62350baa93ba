"""Training throughput of the separators of the comparison, side by side in one process.

A training run reports examples/s too, but one run per model, minutes apart, on
a shared machine: a few percent of noise either way. Here both models take
turns in the same process -- ``rounds`` rounds of ``steps`` full training steps
each (read, decode and augment a batch, forward, backward, Adam step), models
alternating within every round -- and the median round of each is reported with
their ratio. ``synthetic=True`` feeds random tensors of the training shapes
instead of the data set: it measures compute alone (no data on the machine, a
GPU, say).
"""

from __future__ import annotations

import statistics
import time
from itertools import cycle
from pathlib import Path

import torch

from walloc_audio.pretrained import LoadedModel

from .runs import build_run, network_and_loss


def _synthetic_batches(kind: str, conf: dict, model: LoadedModel | None, batch: int):
    seconds = conf["training"]["segment_seconds"]
    if kind.startswith("latent"):
        shape = (model.config.latent_dim, max(1, round(seconds * model.config.sample_rate / model.config.frame)))
    else:
        shape = (2, int(seconds * 44100) // 256 * 256)
    gen = torch.Generator().manual_seed(0)
    stems = [torch.randn(batch, 4, *shape, generator=gen) * 0.1 for _ in range(2)]
    return cycle([(s.sum(1), s) for s in stems])


def training_throughput(conf: dict, kinds=("latent", "umx"), *, exp: Path | None = None,
                        model: LoadedModel | None = None, steps: int = 8, rounds: int = 3, warmup: int = 2,
                        synthetic: bool = False, device: str = "cpu") -> dict:
    """Examples/s of full training steps for each kind, interleaved; see the module docstring.

    Kinds are those of :mod:`separation.runs` (each with its own data and loss).
    Returns ``{kind: {"examples_per_second", "rounds", "parameters"}}``.
    """
    runs = {}
    for kind in kinds:
        torch.manual_seed(conf["training"]["seed"])
        if synthetic:
            net, loss = network_and_loss(kind, conf, model)
            batches = _synthetic_batches(kind, conf, model, conf["training"]["batch_size"])
        else:
            run = build_run(kind, conf, exp, model, validation=False)
            net, loss, batches = run.net, run.loss, _epochs(run.batches)
        net = net.to(device).train()
        runs[kind] = {"net": net, "loss": loss, "batches": batches, "rounds": [],
                      "opt": torch.optim.Adam(net.parameters(), lr=conf["training"]["lr"])}

    def step(r) -> int:
        x, y = next(r["batches"])
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = r["loss"](r["net"], x, y)
        r["opt"].zero_grad(set_to_none=True)
        loss.backward()
        r["opt"].step()
        return x.shape[0]

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for r in runs.values():
        for _ in range(warmup):
            step(r)
    for _ in range(rounds):
        for r in runs.values():
            sync()
            t0, n = time.perf_counter(), 0
            for _ in range(steps):
                n += step(r)
            sync()
            r["rounds"].append(n / (time.perf_counter() - t0))
    return {kind: {"examples_per_second": statistics.median(r["rounds"]), "rounds": r["rounds"],
                   "parameters": sum(p.numel() for p in r["net"].parameters())} for kind, r in runs.items()}


def _epochs(batches):
    epoch = 0
    while True:
        yield from batches(epoch)
        epoch += 1
