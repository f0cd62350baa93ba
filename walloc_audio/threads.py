"""How many threads one coding job's matrix products use (numpy's BLAS, and torch when loaded).

numpy has no API for this; its wheels bundle OpenBLAS, whose
``openblas_set_num_threads`` (prefixed and suffixed in the scipy-openblas build) is
called through ctypes on every OpenBLAS library the process has loaded. The
environment variables are set too, for BLAS libraries loaded later and for
child processes.
"""

from __future__ import annotations

import ctypes
import os
import sys

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")


def _loaded_openblas() -> list[str]:
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:  # not Linux: only the environment variables apply
        return []
    return sorted(paths)


def set_threads(n: int) -> int:
    """Use ``n`` (>= 1) threads for BLAS from now on; returns how many libraries took the setting."""
    n = max(1, int(n))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    done = 0
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done += 1
                break
    if "torch" in sys.modules:  # already paid for by whoever imported it
        sys.modules["torch"].set_num_threads(n)
    return done
