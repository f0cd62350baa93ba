"""The codec's C kernels (``walloc_audio/_kernels.c``), where the install could build them.

Every kernel has a NumPy twin that gives the same bits (tests compare them); an install
without a C compiler runs the twins. ``WALLOC_AUDIO_NUMPY=1`` runs the twins even where the
kernels are built (for checks and benchmarks).
"""

from __future__ import annotations

import os

try:
    from . import _kernels as kernels
except ImportError:  # pragma: no cover - an install without a compiler
    kernels = None

ENABLED = kernels is not None and os.environ.get("WALLOC_AUDIO_NUMPY", "") in ("", "0")
