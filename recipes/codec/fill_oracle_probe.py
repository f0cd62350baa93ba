#!/usr/bin/env python3
"""How much can any noise fill gain? Oracle fills that know the original, through the real file path.

    python recipes/codec/fill_oracle_probe.py [FILES...] [--model stereo-5x-linear] [--seconds 10]
        [--modes white,band-limited,signs,true,true-full,null-space,copy-up] [--edges HZ,...] [--fraction F]

Each file's middle ``--seconds`` is encoded with the fill ``--edges`` / ``--fraction`` describe
(default: the shipped ones; real packets, real fill levels) and decoded once per mode; the decoder's fill step is patched in this process
only (nothing reaches a file format). Every mode fills the same (channel, group, block)
cells to the same energy as the codec does -- ``fraction`` of what the decode misses --
and differs only in *what* it adds, always projected into the encoder's null space:

* ``white``: white noise in the group's coefficients (the fill of files before 2026-12-07);
* ``band-limited``: the shipped fill (each group's noise band-limited before the transform);
* ``signs``: the original's coefficient magnitudes, frame by frame and band by band, with
  random signs -- the finest envelope any side information could carry, without waveform;
* ``true``: the original's own coefficients in the group -- the waveform of the high band;
* ``true-full``: the same, unscaled: the decode's null space above the first edge is exact;
* ``null-space``: the decode's whole null space replaced by the original's (every band):
  the ceiling of anything that leaves the latents as they are;
* ``copy-up``: the decode's own coefficients of 2.5-5 kHz copied up band by band
  (spectral band replication without transposition).

Printed per file and mode: ViSQOL v3 (audio mode), SNR; then the means.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

import numpy as np
from noise_fill_probe import code  # this folder is on sys.path when the probe runs as a script

from walloc_audio.audio import read_audio
from walloc_audio.demo import DEMO_CLIP
from walloc_audio.metrics import snr_db
from walloc_audio.noisefill import BAND_LIMITED, SEED, WHITE, FillSpec, NoiseFill, block_scales
from walloc_audio.pretrained import load_model
from walloc_audio.tools.evaluation import visqol
from walloc_audio.wavelets import subband_centres_hz

MODES = ("white", "band-limited", "signs", "true", "true-full", "null-space", "copy-up")


@contextlib.contextmanager
def oracle_fill(mode: str, original: np.ndarray):
    """Patch :meth:`NoiseFill._fill` for ``mode``; ``original``: the clip's coefficient frames
    ``[C*P, K]`` (frequency order, channel-major), frame ``t`` of the stream at column ``t``."""
    shipped = NoiseFill._fill

    def fill(self, coef, blocks, first):
        n = coef.shape[1]
        x = np.zeros((original.shape[0], n), dtype=np.float32)
        have_cols = max(0, min(n, original.shape[1] - first))
        x[:, :have_cols] = original[:, first : first + have_cols]
        if not hasattr(self, "_null"):  # I - E^+ E, once per decoder
            e = self._encoder
            self._null = np.eye(e.shape[1], dtype=np.float32) - (np.linalg.pinv(e) @ e).astype(np.float32)
        null = self._null
        if mode == "null-space":
            coef += null @ x
            return
        sizes = np.array([m for m, _ in blocks])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        targets = np.stack([t if t is not None else np.zeros((self.channels, len(self.groups))) for _, t in blocks])
        decoded = self._in_pair_directions(coef)
        if mode == "true-full":
            keep = np.zeros_like(x)
            for i, sl in enumerate(self._pairs):
                ch, g = divmod(i, len(self.groups))
                on = np.repeat(targets[:, ch, g] > 0, sizes)
                keep[self._rows[sl]] = x[self._rows[sl]] * on[None, :]
            coef += null @ keep
            return
        if mode == "copy-up":
            p = self.bands
            centre = subband_centres_hz(int(np.log2(p)), self._rate)
            lo, hi = int(np.searchsorted(centre, 2500.0)), int(self.groups[0][0])
            rows = [(r // p) * p + lo + (r % p - lo) % (hi - lo) for r in self._rows]
            src = coef[np.array(rows)]
        else:
            src = x[self._rows]
            if mode == "signs":
                src = np.abs(src) * np.sign(np.random.default_rng([SEED, first]).standard_normal(src.shape))
        for i, sl in enumerate(self._pairs):  # the shipped energy rule, with this source as the "noise"
            ch, g = divmod(i, len(self.groups))
            want = targets[:, ch, g]
            if sl.stop == sl.start or not want.any():
                continue
            full = np.zeros_like(x)
            full[self._rows[sl]] = src[sl]
            full = null @ full
            got = np.add.reduceat(np.square(full[self._rows[sl]], dtype=np.float64).mean(axis=0), starts) / sizes
            scale = block_scales(decoded[sl], want, got, starts, sizes, self.spec.fraction)
            coef += full * np.repeat(scale, sizes).astype(np.float32)[None, :]

    if mode not in ("white", "band-limited"):
        NoiseFill._fill = fill
    try:
        yield
    finally:
        NoiseFill._fill = shipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--model", default="stereo-5x-linear")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--edges", type=lambda v: tuple(int(e) for e in v.split(",")), default=FillSpec.edges_hz,
                    help="band group edges in Hz (default: the shipped ones)")
    ap.add_argument("--fraction", type=float, default=FillSpec.fraction, help="share of the missing energy filled")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if set(modes) - set(MODES):
        ap.error(f"unknown mode(s) {sorted(set(modes) - set(MODES))}; choose from {','.join(MODES)}")
    model = load_model(args.model)
    rate, frame = model.config.sample_rate, model.config.frame
    scores = {m: [] for m in modes}
    for path in args.files or [Path(DEMO_CLIP)]:
        x, _ = read_audio(path, sample_rate=rate)
        n = min(int(args.seconds * rate), x.shape[1]) // frame * frame
        start = max(0, (x.shape[1] - n) // 2)
        x = np.ascontiguousarray(x[:, start : start + n], dtype=np.float32)
        x64 = x.astype(np.float64)
        rt = model.runtime
        _, coef = rt.analysis_frames(np.pad(x, ((0, 0), (rt.history_frames * frame, 0))), coefficients=True)
        original = np.ascontiguousarray(coef.reshape(-1, coef.shape[2]))  # the frames the encoder codes
        ref = visqol.excerpt(x64, rate, args.seconds)
        line = [path.name]
        with tempfile.TemporaryDirectory() as tmp:
            for mode in modes:
                spec = FillSpec(edges_hz=args.edges, fraction=args.fraction,
                                noise=WHITE if mode == "white" else BAND_LIMITED)
                with oracle_fill(mode, original):
                    y, _ = code(x, model, rate, spec, Path(tmp), mode)
                v, _ = visqol.score(ref, visqol.excerpt(y, rate, args.seconds))
                scores[mode].append(v)
                line.append(f"{mode} {v:.2f} ({snr_db(x64, y):.1f} dB)")
        print("  ".join(line), flush=True)
    print(f"\n{len(scores[modes[0]])} clips, {args.model}, mean ViSQOL: "
          + "  ".join(f"{m} {np.mean(v):.2f}" for m, v in scores.items()))


if __name__ == "__main__":
    main()
