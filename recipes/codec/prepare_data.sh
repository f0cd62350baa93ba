#!/usr/bin/env bash
# Prepare the codec's stereo music corpus from Debian packages.
# Usage: PYTHON=/path/to/venv/bin/python recipes/codec/prepare_data.sh --out DIR [options]
# All options are passed to prepare_data.py (see --help).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python3}" "$here/prepare_data.py" "$@"
