#!/usr/bin/env python3
"""Stage 4: every model side by side -> exp/TAG/results.{md,json}, sdr.svg and curve.svg (learning curves)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from separation.evaluate import DISCLAIMER, STEMS


def svg_bars(rows: dict[str, dict], path: Path) -> None:
    """A dependency-free grouped bar chart of SDR per stem (one colour per model)."""
    colours = ["#3b6ea8", "#d9822b", "#5a9e4b", "#9b59b6", "#c0392b", "#7f8c8d"]
    groups = list(STEMS) + ["avg"]
    vals = {m: [r["aggregate"][g]["SDR"] for g in groups] for m, r in rows.items()}
    finite = [v for vs in vals.values() for v in vs if v == v]
    lo, hi = min(0.0, *finite) if finite else 0.0, max(1.0, *finite) if finite else 1.0
    w, h, pad, gw = 640, 320, 40, (640 - 80) / len(groups)
    y = lambda v: h - pad - (v - lo) / (hi - lo) * (h - 2 * pad)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<line x1="{pad}" y1="{y(0):.1f}" x2="{w - pad}" y2="{y(0):.1f}" stroke="#444"/>',
             f'<text x="{pad}" y="16">SDR (dB), median over frames then tracks</text>']
    bw = gw / (len(rows) + 1)
    for gi, g in enumerate(groups):
        x0 = pad + gi * gw
        parts.append(f'<text x="{x0 + gw / 2 - 14:.1f}" y="{h - 12}">{g}</text>')
        for mi, (m, vs) in enumerate(vals.items()):
            v = vs[gi] if vs[gi] == vs[gi] else 0.0
            top, bottom = sorted((y(v), y(0)))
            parts.append(f'<rect x="{x0 + (mi + 0.5) * bw:.1f}" y="{top:.1f}" width="{bw * 0.9:.1f}" '
                         f'height="{bottom - top:.1f}" fill="{colours[mi % len(colours)]}"><title>{m} {g}: {v:.2f} dB</title></rect>')
    for mi, m in enumerate(vals):
        parts.append(f'<rect x="{w - 150}" y="{24 + 16 * mi}" width="10" height="10" fill="{colours[mi % len(colours)]}"/>'
                     f'<text x="{w - 135}" y="{33 + 16 * mi}">{m}</text>')
    path.write_text("\n".join(parts + ["</svg>"]) + "\n")


def svg_curves(curves: dict[str, list], path: Path) -> None:
    """Validation SDR against training minutes, one line per model (dependency-free SVG)."""
    colours = ["#3b6ea8", "#d9822b", "#5a9e4b", "#9b59b6", "#c0392b"]
    pts = {m: [(r["train_seconds"] / 60, r["val_sdr"]) for r in c if r["val_sdr"] is not None] for m, c in curves.items()}
    xs = [x for p in pts.values() for x, _ in p] or [0.0, 1.0]
    ys = [y for p in pts.values() for _, y in p] or [0.0, 1.0]
    x_hi, y_lo, y_hi = max(xs + [1.0]), min(ys + [0.0]), max(ys + [1.0])
    w, h, pad = 640, 340, 48
    X = lambda v: pad + v / x_hi * (w - 2 * pad)  # noqa: E731
    Y = lambda v: h - pad - (v - y_lo) / (y_hi - y_lo) * (h - 2 * pad)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<text x="{pad}" y="16">validation SDR (dB, global, mean over stems) vs training minutes</text>',
             f'<line x1="{pad}" y1="{Y(0):.1f}" x2="{w - pad}" y2="{Y(0):.1f}" stroke="#bbb"/>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#444"/>',
             f'<text x="{w - pad - 20}" y="{h - pad + 16}">{x_hi:.0f} min</text>',
             f'<text x="4" y="{Y(y_hi):.1f}">{y_hi:.1f}</text><text x="4" y="{Y(y_lo):.1f}">{y_lo:.1f}</text>']
    for i, (m, p) in enumerate(pts.items()):
        c = colours[i % len(colours)]
        if p:
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                         + " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in p) + '"/>')
        parts.append(f'<rect x="{w - 170}" y="{28 + 16 * i}" width="10" height="10" fill="{c}"/>'
                     f'<text x="{w - 155}" y="{37 + 16 * i}">{m}</text>')
    path.write_text("\n".join(parts + ["</svg>"]) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    args = ap.parse_args()
    conf = yaml.safe_load(args.conf.read_text())
    rows, curves = {}, {}
    for m in conf["training"]["models"]:
        scores, figs = args.exp / m / "scores.json", args.exp / m / "figures.json"
        if scores.exists() and figs.exists():
            rows[m] = {**json.loads(scores.read_text()), "train": json.loads(figs.read_text())}
        if (args.exp / m / "curve.json").exists():
            curves[m] = json.loads((args.exp / m / "curve.json").read_text())
    if not rows:
        raise SystemExit(f"no scored models under {args.exp}: run stages 2 and 3 first")
    for name, folder in (("codec ceiling", "oracle"), ("ideal ratio mask (latents)", "irm"),
                         ("ideal ratio mask (wavelet packets)", "irm-packets"),
                         ("floor: a quarter of the mixture", "floor")):
        if (args.exp / folder / "scores.json").exists():  # no training
            rows[name] = {**json.loads((args.exp / folder / "scores.json").read_text()), "train": None}
    lines = [f"# Separation results ({args.exp.name})", "",
             "| model | " + " | ".join(STEMS) + " | avg SDR | params | budget | steps | examples/s | peak RSS |",
             "|---|" + "---|" * (len(STEMS) + 6)]
    for m, r in rows.items():
        a, t = r["aggregate"], r["train"]
        sdr = " | ".join(f"{a[s]['SDR']:.2f}" for s in STEMS)
        if t is None:
            lines.append(f"| {m} | {sdr} | {a['avg']['SDR']:.2f} |" + " – |" * 5)
            continue
        lines.append(f"| {m} | {sdr} | {a['avg']['SDR']:.2f} | {t['parameters']:,} | "
                     f"{t['train_seconds'] / 60:.1f} min ({t['clock']}, {t.get('threads', '?')} thr) | {t['steps']} | "
                     f"{t['examples_per_second']:.2f} | {t['peak_rss_mb']:.0f} MB |")
    excluded = {s: max(r["aggregate"][s]["excluded_silent"] for r in rows.values()) for s in STEMS}
    unscorable = {s: max(r["aggregate"][s].get("excluded_unscorable", 0) for r in rows.values()) for s in STEMS}
    skipped = {m: r["train"].get("skipped_tracks", 0) for m, r in rows.items() if r["train"]}
    lines += ["", f"Test tracks: {len(next(iter(rows.values()))['tracks'])}; silent reference stems excluded: "
              f"{excluded}; stems without a window where all stems sound (museval leaves them out): "
              f"{unscorable}; corrupt training tracks skipped: {skipped}. {DISCLAIMER}", "",
              "![SDR per stem](sdr.svg)", "", "![learning curves](curve.svg)"]
    (args.exp / "results.md").write_text("\n".join(lines) + "\n")
    (args.exp / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    svg_bars(rows, args.exp / "sdr.svg")
    svg_curves(curves, args.exp / "curve.svg")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
