"""Training throughput of latent vs waveform separators, side by side, outside Lightning.

A training run reports examples/s too, but one run per model, minutes apart, on
a shared machine: a few percent of noise either way. Here both models take
turns in the same process -- ``rounds`` rounds of ``steps`` full training steps
each (read and augment a batch, forward, backward, Adam step), models
alternating within every round -- and the median round of each is reported with
their ratio. ``synthetic=True`` feeds random tensors of the training shapes
instead of the data set: it measures compute alone (no data on the machine, a
GPU, say).
"""

from __future__ import annotations

import statistics
import time
from itertools import cycle

import torch
from torch.utils.data import DataLoader

from walloc_audio.pretrained import LoadedModel

from .train import build, make_loss, make_network


def _synthetic_batches(kind: str, conf: dict, model: LoadedModel | None, batch: int):
    seconds = conf["training"]["segment_seconds"]
    if kind == "latent":
        shape = (model.config.latent_dim, max(1, round(seconds * model.config.sample_rate / model.config.frame)))
    else:
        shape = (2, int(seconds * 44100) // 256 * 256)
    gen = torch.Generator().manual_seed(0)
    stems = [torch.randn(batch, 4, *shape, generator=gen) * 0.1 for _ in range(2)]
    return cycle([(s.sum(1), s) for s in stems])


def training_throughput(conf: dict, kinds=("latent", "waveform"), *, model: LoadedModel | None = None, cache=None,
                        data_root=None, steps: int = 8, rounds: int = 3, warmup: int = 2, synthetic: bool = False,
                        device: str = "cpu") -> dict:
    """Examples/s of full training steps for each kind, interleaved; see the module docstring.

    Returns ``{kind: {"examples_per_second", "rounds", "parameters"}, "ratio": latent / waveform}``
    (the ratio only when both kinds ran).
    """
    tr = conf["training"]
    loss_fn = make_loss(tr.get("loss", "mse"))
    runs = {}
    for kind in kinds:
        torch.manual_seed(tr["seed"])
        if synthetic:
            net, batches = make_network(kind, conf, model), _synthetic_batches(kind, conf, model, tr["batch_size"])
        else:
            net, data = build(kind, conf, model, cache, data_root)
            batches = cycle(DataLoader(data, batch_size=tr["batch_size"], drop_last=True))
        net = net.to(device).train()
        runs[kind] = {"net": net, "batches": batches, "opt": torch.optim.Adam(net.parameters(), lr=tr["lr"]),
                      "rounds": []}

    def step(run) -> int:
        x, y = next(run["batches"])
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(run["net"](x), y)
        run["opt"].zero_grad(set_to_none=True)
        loss.backward()
        run["opt"].step()
        return x.shape[0]

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for run in runs.values():
        for _ in range(warmup):
            step(run)
    for _ in range(rounds):
        for run in runs.values():
            sync()
            t0, n = time.perf_counter(), 0
            for _ in range(steps):
                n += step(run)
            sync()
            run["rounds"].append(n / (time.perf_counter() - t0))
    out = {kind: {"examples_per_second": statistics.median(r["rounds"]), "rounds": r["rounds"],
                  "parameters": sum(p.numel() for p in r["net"].parameters())} for kind, r in runs.items()}
    if "latent" in out and "waveform" in out:
        out["ratio"] = out["latent"]["examples_per_second"] / out["waveform"]["examples_per_second"]
    return out
