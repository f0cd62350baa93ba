#!/usr/bin/env python3
"""Stage 1 (for latent-float): every training stem once into the float latent cache (exp/TAG/cache/train).

The training tracks of the set (its validation tracks held out), as the .wlc shards hold them."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from separation.cache import build_cache, cache_stats, open_cache
from separation.data import DatasetError
from walloc_audio.pretrained import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    args = ap.parse_args()
    conf = yaml.safe_load(args.conf.read_text())
    model = load_model(conf["codec"]["model"])
    out = args.exp / "cache" / "train"
    try:
        cache = open_cache(out, model)
        print(f"latent cache {out} is up to date")
    except DatasetError:
        cache = build_cache(conf["data"]["root"], "train", model, out, split="train", dtype=conf["codec"]["dtype"],
                            overwrite=True)
    st = cache_stats(cache)
    print(f"{st.tracks} tracks, {st.seconds / 60:.1f} min, {st.bytes / 1e6:.1f} MB on disk vs "
          f"{st.pcm16_bytes / 1e6:.1f} MB of 16-bit PCM stems ({st.ratio:.2f}x smaller)")


if __name__ == "__main__":
    main()
