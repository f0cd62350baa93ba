#!/usr/bin/env bash
# Separation on compressed files (WaLLoC .wlc latents) vs Open-Unmix and ConvTasNet, asteroid-recipe style.
#
#   ./run.sh [--stage N] [--stop-stage M] [--tag TAG] [--root MUSDB_ROOT] [--exp-dir DIR] [--set key=value]...
#            [--threads N]    (results go to exp/TAG, or to DIR)
#
# Stages: 0 prepare data (build the local MUSDB-style set unless --root is given)
#         1 code every stem and mixture once into .wlc tar shards (+ the float latent cache for latent-float)
#         2 train every model of training.models on the same budget, each with its learning curve (fit.py)
#         3 evaluate (museval; also the codec's ceiling and the quarter-mixture floor)
#         4 report (exp/TAG/results.md, results.json, sdr.svg, curve.svg)
# Runs unchanged on MUSDB18 (.stem.mp4), MUSDB18-HQ or the local set: pass --root.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
stage=0; stop_stage=4; tag=""; root=""; exp=""; sets=(); threads=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --exp-dir) exp=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --threads) threads=(--threads "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
tag=${tag:-$(date +%Y%m%d-%H%M%S)}
exp=${exp:-exp/$tag}
local_root=${WALLOC_DATA:-$HOME/walloc-data}/musdb-local
mkdir -p "$exp"

if [[ ! -f $exp/conf.yml || $stage -le 0 ]]; then
  $PYTHON resolve_conf.py --conf conf.yml --out "$exp/conf.yml" ${root:+--root "$root"} "${sets[@]}" >/dev/null
elif [[ ${#sets[@]} -gt 0 || -n $root ]]; then
  # A later stage with --set/--root updates the run's resolved config (e.g. a longer budget resumes).
  $PYTHON resolve_conf.py --conf "$exp/conf.yml" --out "$exp/conf.yml" ${root:+--root "$root"} "${sets[@]}" >/dev/null
fi
conf=$exp/conf.yml
root=$($PYTHON -c "import yaml,sys; print(yaml.safe_load(open('$conf'))['data']['root'] or '')")
max_seconds=$($PYTHON -c "import yaml; print(yaml.safe_load(open('$conf'))['data']['max_seconds'])")
test_max_seconds=$($PYTHON -c "import yaml; print(yaml.safe_load(open('$conf'))['data'].get('test_max_seconds') or '')")
models=$($PYTHON -c "import yaml; print(' '.join(yaml.safe_load(open('$conf'))['training']['models']))")
eval_jobs=$($PYTHON -c "import yaml; print(yaml.safe_load(open('$conf'))['data'].get('eval_jobs') or 1)")
eval_oracle=$($PYTHON -c "import yaml; print(bool(yaml.safe_load(open('$conf'))['data'].get('eval_oracle', True)))")

if [[ $stage -le 0 && 0 -le $stop_stage ]]; then
  if [[ -z $root ]]; then
    echo "stage 0: building the local MUSDB-style set in $local_root"
    $PYTHON ../prepare_stems.py --root "$local_root" --max-seconds "$max_seconds" ${test_max_seconds:+--test-max-seconds "$test_max_seconds"}
    $PYTHON resolve_conf.py --conf "$conf" --out "$conf" --root "$local_root" >/dev/null
  else
    echo "stage 0: using $root"
  fi
fi
root=$($PYTHON -c "import yaml; print(yaml.safe_load(open('$conf'))['data']['root'] or '')")
[[ -n $root ]] || { echo "no data root: run stage 0 or pass --root" >&2; exit 1; }

if [[ $stage -le 1 && 1 -le $stop_stage ]]; then
  echo "stage 1: .wlc shards"
  $PYTHON shards.py --conf "$conf" --exp "$exp"
  if [[ " $models " == *" latent-float "* ]]; then
    echo "stage 1: float latent cache (latent-float)"
    $PYTHON cache.py --conf "$conf" --exp "$exp"
  fi
fi
if [[ $stage -le 2 && 2 -le $stop_stage ]]; then
  for m in $models; do
    echo "stage 2: training $m"
    $PYTHON fit.py --conf "$conf" --exp "$exp" --model "$m" "${threads[@]}"
  done
fi
if [[ $stage -le 3 && 3 -le $stop_stage ]]; then
  for m in $models; do
    echo "stage 3: evaluating $m"
    $PYTHON eval.py --conf "$conf" --exp "$exp" --model "$m" --jobs "$eval_jobs"
  done
  if [[ $eval_oracle == True ]]; then
    echo "stage 3: scoring the codec's ceiling (true stems through the codec)"
    $PYTHON eval.py --conf "$conf" --exp "$exp" --model oracle --jobs "$eval_jobs"
  fi
  echo "stage 3: scoring the floor (every stem a quarter of the mixture)"
  $PYTHON eval.py --conf "$conf" --exp "$exp" --model floor --jobs "$eval_jobs"
fi
if [[ $stage -le 4 && 4 -le $stop_stage ]]; then
  echo "stage 4: report"
  $PYTHON report.py --conf "$conf" --exp "$exp"
fi
