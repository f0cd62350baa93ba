"""What a user waits for: whole-process CLI times and peak memory, start-up included.

    python -m walloc_audio.tools.startup_bench [--bin DIR] [--repeats 5]

Runs the ``walloc-audio`` executable of ``DIR`` (a virtualenv's ``bin``; default:
the one next to this interpreter) as a user would, on a 10-s stereo excerpt of
the shipped music clip: ``--help``, ``info``, ``encode`` and ``decode``. Each row
is the best wall time of ``--repeats`` runs and the largest peak RSS of the
child (``ru_maxrss`` from ``wait4``). Also reports the size on disk of that
virtualenv and whether torch can be imported in it. Targets (issue 12): info and
--help < 0.3 s; encode and decode of the 10-s clip < 0.6 s each; peak RSS < 150 MB;
lean install < 150 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from walloc_audio.audio import read_audio
from walloc_audio.demo import DEMO_CLIP


def _run(cmd: list[str], cwd: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process; raises on a non-zero exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-500:]}")
    return wall, usage.ru_maxrss / 1024


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.dirname(sys.executable), help="the virtualenv's bin folder")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args(argv)
    exe = os.path.join(args.bin, "walloc-audio")
    if not os.access(exe, os.X_OK):
        raise SystemExit(f"no walloc-audio executable in {args.bin}")
    venv = Path(args.bin).resolve().parent
    has_torch = subprocess.run([os.path.join(args.bin, "python"), "-c", "import torch"],
                               capture_output=True).returncode == 0
    x, rate = read_audio(DEMO_CLIP)
    n = int(args.seconds * rate)
    x = np.tile(x, (1, -(-n // x.shape[1])))[:, :n]
    with tempfile.TemporaryDirectory(prefix="walloc-startup-") as tmp:
        sf.write(os.path.join(tmp, "clip.flac"), x.T, rate, subtype="PCM_16")
        cases = [("--help", [exe, "--help"]), ("encode 10 s", [exe, "encode", "-q", "-f", "clip.flac", "clip.wlc"]),
                 ("info", [exe, "info", "clip.wlc"]), ("info --json", [exe, "info", "--json", "clip.wlc"]),
                 ("decode 10 s", [exe, "decode", "-q", "-f", "clip.wlc", "out.wav"]),
                 ("models", [exe, "models"])]
        print(f"walloc-audio of {venv} ({'torch importable' if has_torch else 'no torch'}), "
              f"{os.cpu_count()} CPU cores, best of {args.repeats}:")
        print(f"  {'command':<14} {'wall s':>7} {'peak RSS MB':>12}")
        for label, cmd in cases:
            runs = [_run(cmd, tmp) for _ in range(args.repeats)]
            print(f"  {label:<14} {min(r[0] for r in runs):7.3f} {max(r[1] for r in runs):12.0f}")
    print(f"  virtualenv on disk: {_du(venv) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
