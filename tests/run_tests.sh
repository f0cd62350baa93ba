#!/usr/bin/env bash
# Run the whole test suite with the venv's python (called by `make test`).
# Services a test needs are started here and stopped on exit:
#   - a private PulseAudio daemon (tests/pulse.sh) for the live-audio tests in tests/streaming.
#     If it cannot start, the reason is printed and those tests skip; when CI is set (CI=true,
#     as CI systems do) a daemon that will not start fails the run instead.
# Extra arguments go to pytest (and skip the second pass below). Exits with pytest's exit code.
set -euo pipefail
BIN="${1:?usage: tests/run_tests.sh VENV_BIN}"
cd "$(dirname "$0")/.."

if exports=$(bash tests/pulse.sh start); then
    eval "$exports"
    trap 'bash tests/pulse.sh stop || true' EXIT
else
    echo "run_tests.sh: no PulseAudio daemon (see above); live-audio tests will be skipped" >&2
    if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; then
        echo "run_tests.sh: CI is set, and CI must run the live-audio tests: failing" >&2
        exit 1
    fi
fi

rc=0
"$BIN/python" -m pytest -q tests "${@:2}" || rc=$?
# The codec again with the NumPy twins of the C kernels (walloc_audio.native), what an install
# without a C compiler runs: the same bits are asserted kernel by kernel, this checks the paths.
if [ "$#" -le 1 ]; then
    WALLOC_AUDIO_NUMPY=1 "$BIN/python" -m pytest -q tests/walloc_audio || rc=$?
fi
exit "$rc"
