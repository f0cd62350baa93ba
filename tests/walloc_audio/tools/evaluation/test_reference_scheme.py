"""The reference WaLLoC scheme (8-bit Gaussian compander + lossless WebP) as an eval baseline."""

from __future__ import annotations

import numpy as np
import pytest

from walloc_audio.tools.evaluation import reference_scheme as ref
from walloc_audio.metrics import paper_psnr, snr_db
from walloc_audio.pretrained import load_model

from helpers import tones


def test_compander_round_trip_and_tiling_are_exact_where_they_should_be():
    z = np.linspace(-0.5, 0.5, 1001)
    q = ref.compand(z, 0.5)
    assert q.dtype == np.uint8 and q.min() >= 1 and q.max() <= 255
    back = ref.expand(q, 0.5)
    assert np.max(np.abs(back - z)) < 0.01  # one 8-bit step of the compander near zero
    assert np.all(np.diff(q.astype(int)) >= 0)  # monotonic
    rng = np.random.default_rng(0)
    q = rng.integers(0, 256, (108, 3, 256), dtype=np.uint8)
    img = ref.tile(q)
    assert img.shape == (6 * 3, 6 * 256, 3)
    np.testing.assert_array_equal(ref.untile(img, 108), q)
    np.testing.assert_array_equal(img[0, :256, 1], q[36, 0])  # channel 36 = green of the first tile
    with pytest.raises(ValueError, match="3 \\* n"):
        ref.tile(q[:100])


def test_reference_scheme_codes_audio_and_trades_rate_for_quality():
    model = load_model("stereo-5x-linear")
    x = tones(3.0, amp=0.3) + 0.01 * np.random.default_rng(1).standard_normal((2, 3 * 44100))
    fine, coarse = (ref.code(x.astype(np.float32), model.runtime, s) for s in (0.25, 2.0))
    for c in (fine, coarse):
        assert c.y.shape == x.shape and c.bytes > ref.SIDE_BYTES
    assert coarse.bytes < fine.bytes
    assert snr_db(x, fine.y) > snr_db(x, coarse.y) > 3
    assert paper_psnr(x, fine.y) > 30
