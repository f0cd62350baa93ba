#!/usr/bin/env python3
"""Stage 1: code every stem and mixture once into .wlc tar shards (exp/TAG/wlc/{train,valid,test}).

    python shards.py --conf exp/TAG/conf.yml --exp exp/TAG
Prints and writes exp/TAG/wlc/report.json: storage against 16-bit PCM stems and the float16
latent cache, latent frames decoded per second on one core, and the quantized remixing gap.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from separation.data import STEMS, DatasetError, open_musdb, stem_path
from separation.shards import build_shards, iter_tracks, open_shards, remix_gap, Skips
from walloc_audio.pretrained import load_model
from walloc_audio.threads import set_threads

PARTS = {"train": ("train", "train"), "valid": ("train", "valid"), "test": ("test", None)}


def flac_bytes(root, subset: str, split) -> int | None:
    """Bytes of the set's stems as 16-bit FLAC (libsndfile's default compression), for the storage table."""
    import io

    import soundfile as sf

    total = 0
    for track in open_musdb(root, subset, split=split):
        if not track.is_wav:
            return None
        for s in STEMS:
            buf = io.BytesIO()
            x, rate = sf.read(str(stem_path(track, s)), dtype="int16")
            sf.write(buf, x, rate, format="FLAC", subtype="PCM_16")
            total += buf.getbuffer().nbytes  # not tell(): libsndfile seeks back to finish the header
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--exp", type=Path, required=True)
    args = ap.parse_args()
    set_threads(1)
    conf = yaml.safe_load(args.conf.read_text())
    sh = conf.get("shards", {})
    model = load_model(conf["codec"]["model"])
    report = {"model": model.name, "quality": sh.get("quality"), "parts": {}}
    for part, (subset, split) in PARTS.items():
        out = args.exp / "wlc" / part
        try:
            shards = open_shards(out, model)
            print(f"{out} is up to date")
        except DatasetError:
            t = time.perf_counter()
            shards = build_shards(conf["data"]["root"], subset, model, out, split=split, quality=sh.get("quality"),
                                  tracks_per_shard=sh.get("tracks_per_shard", 4), overwrite=True)
            print(f"{out}: {len(shards.index['tracks'])} tracks coded in {time.perf_counter() - t:.1f} s")
        skips = Skips()
        t = time.perf_counter()
        tracks = list(iter_tracks([str(f) for f in shards.files], model, skips=skips))
        seconds = time.perf_counter() - t
        frames = sum(sum(z.shape[1] for z in tr.latents.values()) for tr in tracks)
        stem_bytes = sum(sum(v for k, v in t_["bytes"].items() if k != "mixture") for t_ in shards.index["tracks"])
        pcm = shards.index["pcm16_stem_bytes"]
        audio_s = sum(tr.samples for tr in tracks) / model.config.sample_rate
        f16 = sum(tr.latents["drums"].shape[1] for tr in tracks) * 4 * model.config.latent_dim * 2
        flac = flac_bytes(conf["data"]["root"], subset, split)
        rep = {"tracks": len(tracks), "skipped": skips.items, "minutes": audio_s / 60,
               "stem_wlc_bytes": stem_bytes, "pcm16_stem_bytes": pcm, "float16_cache_bytes": f16,
               "flac_stem_bytes": flac, "x_smaller_than_flac": flac / stem_bytes if flac else None,
               "x_smaller_than_pcm16": pcm / stem_bytes, "x_smaller_than_float16_cache": f16 / stem_bytes,
               "stem_kbps": 8 * stem_bytes / 4 / max(audio_s, 1e-9) / 1000,
               "decode_frames_per_second_one_core": frames / seconds,
               "remix": remix_gap(tracks)}
        report["parts"][part] = rep
        print(f"{part}: {rep['tracks']} tracks, {rep['minutes']:.1f} min; stems {stem_bytes / 1e6:.1f} MB of .wlc vs "
              f"{pcm / 1e6:.1f} MB 16-bit PCM ({rep['x_smaller_than_pcm16']:.1f}x), "
              f"{(flac or 0) / 1e6:.1f} MB FLAC ({rep['x_smaller_than_flac'] or 0:.1f}x) and {f16 / 1e6:.1f} MB float16 "
              f"latents ({rep['x_smaller_than_float16_cache']:.1f}x); {rep['decode_frames_per_second_one_core']:.0f} "
              f"latent frames/s decoded on one core; coded mixture vs sum of coded stems "
              f"{rep['remix']['median_gap_db']:.1f} dB (median); {len(skips)} skipped")
    (args.exp / "wlc" / "report.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
