"""Fixtures for the streaming tests: a reachable PulseAudio server for the live-audio ones.

`tests/run_tests.sh` starts a private daemon (tests/pulse.sh: default source `sine` at 440 Hz,
default sink `nullsink`) and exports its XDG_RUNTIME_DIR / PULSE_SERVER; a plain `pytest` run
without it skips the live tests with the reason instead of failing on a machine with no audio.
"""

import shutil
import subprocess

import pytest


def _pulse_reachable() -> str | None:
    """None if the test daemon answers with the current environment, else the reason it does not."""
    if shutil.which("pactl") is None:
        return "pactl not installed"
    try:
        info = subprocess.run(["pactl", "info"], capture_output=True, text=True, timeout=5)
        if info.returncode != 0:
            return (info.stderr.strip().splitlines() or ["pactl info failed"])[-1]
        sources = subprocess.run(["pactl", "list", "short", "sources"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return "pactl timed out"
    # A desktop session's server answers too, but has no `sine` source that plays a known tone.
    names = {line.split("\t")[1] for line in sources.stdout.splitlines() if line.count("\t") >= 1}
    if not {"sine", "nullsink.monitor"} <= names:
        return "the server found is not the test daemon (no `sine` and `nullsink.monitor` sources)"
    return None


@pytest.fixture(scope="session")
def pulse():
    """Skip unless a PulseAudio server is reachable (the private one from tests/run_tests.sh)."""
    reason = _pulse_reachable()
    if reason is not None:
        pytest.skip(f"no PulseAudio server: run via tests/run_tests.sh ({reason})")
