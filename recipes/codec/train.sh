#!/usr/bin/env bash
# Train the three shipped codecs from scratch and install them into the package registry.
#   WALLOC_DATA=/path/to/data bash recipes/codec/train.sh [MAX_TIME] [extra walloc-audio train flags]
# WALLOC_DATA must hold music/{train,val}.txt (recipes/codec/prepare_data.sh makes them).
# MAX_TIME (DD:HH:MM:SS) caps each model's training; the configs allow 2.5 h.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${WALLOC_DATA:?set WALLOC_DATA to the folder prepare_data.sh filled}"
export WALLOC_DATA
MAX_TIME=${1:-}
shift || true
for name in stereo-5x stereo-20x stereo-5x-ll; do
  extra=()
  [ -n "$MAX_TIME" ] && extra+=(--set "max_time=$MAX_TIME")
  walloc-audio train "recipes/codec/conf/$name.yaml" --out "exp/codec/$name" "${extra[@]}" "$@"
  cp "exp/codec/$name/export/$name.json" "exp/codec/$name/export/$name.safetensors" walloc_audio/models/
done
