"""Noise filling: the high bands the latents drop, sent as a few energies and filled at the decoder.

The linear encoder keeps a subspace of the wavelet packet coefficients (108 of 512
dimensions at J = 8); what it throws away is mostly the quiet high bands, and an MSE
decoder cannot guess them, so decodes lose 5-15 dB above 5 kHz and sound muffled. This
is the parametric answer of high-band coders: per packet, the encoder sends the energy of
the original in a few high band *groups* (by default twelve of about a sixth of an octave
from 5 kHz: 5-5.6, 5.6-6.3, ..., 16-19, 19-22 kHz), per channel and per block of ``block``
frames, in 3-dB steps (1.5 in files before 2026-12-07);
the decoder adds noise limited to those bands wherever its own output falls short.

Contract:

* The noise lives in the **null space of the encoder**: re-encoding a decode gives the
  same latents (up to rounding), so the latents stay what they were -- linear in the audio,
  learnable, remixable. Only the decoder's output changes.
* **Band-limited noise** (header ``"noise": "band-limited"``, what the encoder writes since
  2026-12-07): each group's noise is the packet transform of a periodic noise signal whose
  spectrum is zero outside the group (period ``TABLE_SAMPLES``, computed once per model
  and projected into the null space). White noise in the coefficients, what files without
  the field get, is not band-limited: one J = 8 band's synthesis filter puts 33-44 % of
  its energy in its own 86 Hz and up to 38 % more than 1 kHz away, images that cancel only
  when neighbouring bands carry a real signal's coefficients. Measured on the 10 held-out
  tracks (noise_fill_probe.py --baseline white): ViSQOL 3.40 -> 3.54, 9 of 10 better, same bits.
* Deterministic: frame ``t``'s noise is column ``t`` of the periodic table (white noise:
  from a generator seeded with ``(SEED, t)``) and its scale comes from that frame's block
  alone (the block's target energy against the frame's decoded energy), so a stream decodes
  the same whatever the packets per call, and a live stream equals the file.
* ``fraction`` of the missing energy is filled (0.45 by default: with white noise half the
  energy gained the same ViSQOL as a full fill at half the SNR cost; with 3-dB level steps,
  whose range no longer clips loud high bands, 0.5 and 0.45 give the same ViSQOL, 0.6 no more,
  and each step down costs less PSNR; at 0.45 every band to 16 kHz is within 1.5 dB of the
  original on average); silence stays silent (a level below the floor is never filled).

Side information: per packet ``ceil(frames / block) * C * G`` levels in ``0..63`` (0:
below -125 dB per coefficient, nothing to fill), range-coded as differences from a
prediction -- ``L[b-1, g] + L[b, g-1] - L[b-1, g-1]`` (header ``"levels": "planar"``), or
in files without that field the previous block's level; the first block of a packet from
the previous group -- each packet alone; a packet with
nothing above the floor sends none. It travels
after the packet's v2 payload with its length in the last two bytes; the header's ``fill``
field says it is there and how it was measured.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import constriction
import numpy as np

from .errors import BitstreamError
from .lifting import band_scales, packet_lifting
from .wavelets import freq_to_natural, subband_centres_hz

# From 5 kHz (2026-12-03, noise_fill_probe.py --baseline default, 10 held-out tracks, stereo-5x-linear):
# starting at 4 kHz ViSQOL 3.35, at 5 kHz 3.40 (8 of 10 tracks as good or better, 0.3 kbps less),
# at 6.3 kHz 3.38 with the 5-6.3 kHz band 4.4 dB short; at 2 kHz the noise between resolved
# harmonics costs up to 1 ViSQOL point on a track. Twelve groups of ~1/6 octave since the band-limited
# noise (2026-12-07, same probe and tracks): 3.535 with the six of 5-6.3-8-10-12.5-16-22 kHz, 3.61 with
# twelve (7 of 10 better, knalgan_theme +0.36) for 2.0 kbps more; with white noise twelve gained 0.02.
# Starting at 4 kHz still gains nothing (-0.04..0 on four tracks).
DEFAULT_EDGES_HZ = (5000, 5600, 6300, 7100, 8000, 9000, 10000, 11200, 12500, 14000, 16000, 19000, 22050)
SIX_GROUPS_HZ = (5000, 6300, 8000, 10000, 12500, 16000, 22050)  # the default edges of 2026-12-03
# Blocks of 1024 samples (23 ms; 4 frames at J = 8, 16 at J = 6). Held-out clips, J = 8: blocks of
# 16 frames gave +0.19 ViSQOL, 8 frames +0.46 (stereo-5x, stop 17); on the 10 validation tracks
# with stereo-5x-linear, 8 frames +0.75 and 4 frames +0.95 for 0.9 kbps more (2026-12-03).
DEFAULT_BLOCK_SAMPLES = 1024
DEFAULT_BLOCK = 4  # frames of 256 samples (J = 8); FillSpec.for_frame picks it for any J
# 2026-12-07, 10 held-out tracks: with 1.5-dB steps ViSQOL 3.540 at 0.5, 3.535 at 0.6 (10-12.5 kHz -3.3 /
# -2.65 dB against the original); with 3-dB steps 3.66 at 0.5, 3.645 at 0.6, paper PSNR -0.22 / -0.33 dB
# against 1.5-dB steps at 0.6. 0.75 and 1.0 lost 0.05-0.17 on two tracks. 0.45 since the second session
# of 2026-12-07 (eval headline, 10 tracks, 30 s): ViSQOL 3.888 -> 3.889, paper PSNR 41.28 -> 41.34 dB at
# 26.3 kbps, every band to 16 kHz within 1.5 dB of the original on average (the probe, no fill -> fill).
DEFAULT_FRACTION = 0.45
STEP_DB = 1.5  # level step of every file before 2026-12-07 (header "step_db")
STEPS_DB = (1.5, 3.0)  # the level steps a header may give
# 3 dB since 2026-12-07: 64 levels of 1.5 dB topped out at -30.5 dB per coefficient, under the high bands
# of loud tracks (their fill fell short); 3-dB steps reach +64 dB, the levels cost 0.75 kbps less (twelve
# groups, planar) and ViSQOL rose 3.61 -> 3.66 (desert3 +0.33, new_forest_map +0.16) on the 10 held-out tracks.
DEFAULT_STEP_DB = 3.0
FLOOR_DB = -125.0
MAX_LEVEL = 63
MAX_GROUPS = 16
SEED = 0x57A110C
MID_SIDE = "mid-side"
WHITE, BAND_LIMITED = "white", "band-limited"  # the fill's noise; files without the field: white
TABLE_SAMPLES = 2**17  # period of the band-limited noise: 3.0 s at 44.1 kHz, longer than any block
_H = np.float32(np.sqrt(0.5))
_TAIL = struct.Struct("<H")
_DELTA = constriction.stream.model.QuantizedLaplace(-MAX_LEVEL, MAX_LEVEL)
_PLANAR_DELTA = constriction.stream.model.QuantizedLaplace(-2 * MAX_LEVEL, 2 * MAX_LEVEL)  # a planar guess may leave 0..63
FIRST_SCALE, NEXT_SCALE = 6.0, 2.0  # Laplace scales of the first block's and later blocks' differences
# Planar prediction (2026-12-07): fitted on the first 30 s of the 10 held-out tracks, twelve groups
# (1.5-dB steps, ideal code lengths at 1.0 / 1.25 / 1.5 / 2.0 / 2.5: +4.8 / +0.8 / 0 / +2.0 / +5.8 %;
# 3-dB steps: 1.0 best of 0.75 / 1.0 / 1.25 / 1.5 / 2.0).
PLANAR_SCALE = {1.5: 1.5, 3.0: 1.0}
PLANAR = "planar"  # header "levels": "planar"; absent: each level predicted from the block before


@dataclass(frozen=True)
class FillSpec:
    """What the encoder measured and the decoder fills: band group edges, block, fraction."""

    edges_hz: tuple[int, ...] = DEFAULT_EDGES_HZ
    block: int = DEFAULT_BLOCK
    fraction: float = DEFAULT_FRACTION
    # Two channels measured and filled as mid and side (header "channels": "mid-side"; absent: left and
    # right). Off by default: measured on the 10 held-out tracks it puts the fill's stereo image right
    # (left/right filling makes the side 1-7 dB too loud above 4 kHz) but loses ViSQOL on 8-9 of them
    # (3.35 left/right; mid/side 3.07 at fraction 0.5, 3.13 at 0.25).
    mid_side: bool = False
    # What the decoder fills with: band-limited noise (header "noise": "band-limited") or, as every file
    # before it, white noise in the coefficients (header without the field).
    noise: str = BAND_LIMITED
    # Levels predicted from the block before and the group below (header "levels": "planar", since
    # 2026-12-07: 17 % fewer bits for them) or, as every file before it, from the block before alone.
    planar: bool = True
    # Level step in dB (header "step_db"): 1.5 in every file before 2026-12-07.
    step_db: float = DEFAULT_STEP_DB

    @classmethod
    def for_frame(cls, frame: int, **kw) -> "FillSpec":
        """The default spec for frames of ``frame`` samples: blocks of ``DEFAULT_BLOCK_SAMPLES``."""
        return cls(block=max(1, DEFAULT_BLOCK_SAMPLES // int(frame)), **kw)

    def to_header(self) -> dict:
        d = {"edges_hz": list(self.edges_hz), "block": self.block, "fraction": self.fraction,
             "step_db": self.step_db, "floor_db": FLOOR_DB}
        if self.mid_side:  # absent: left/right, as every file before it
            d["channels"] = MID_SIDE
        if self.noise != WHITE:  # absent: white noise, as every file before it
            d["noise"] = self.noise
        if self.planar:  # absent: the previous block's prediction, as every file before it
            d["levels"] = PLANAR
        return d

    @classmethod
    def from_header(cls, d: dict, sample_rate: int) -> "FillSpec":
        """Parse and bound a header's ``fill`` field (untrusted): a bad one is a :class:`BitstreamError`."""
        try:
            edges = tuple(int(e) for e in d["edges_hz"])
            block, fraction = d["block"], d["fraction"]
            ok = (type(block) is int and 1 <= block <= 4096 and type(fraction) in (int, float)
                  and 0 < fraction <= 1 and 2 <= len(edges) <= MAX_GROUPS + 1
                  and all(0 < a < b for a, b in zip(edges[:-1], edges[1:])) and edges[-1] <= sample_rate / 2
                  and d.get("step_db") in STEPS_DB and d.get("floor_db") == FLOOR_DB
                  and d.get("channels", MID_SIDE) == MID_SIDE and d.get("noise", BAND_LIMITED) == BAND_LIMITED
                  and d.get("levels", PLANAR) == PLANAR
                  and set(d) - {"channels", "noise", "levels"} == {"edges_hz", "block", "fraction", "step_db", "floor_db"})
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise BitstreamError(f"invalid header: fill={d!r}")
        return cls(edges, block, float(fraction), "channels" in d, d.get("noise", WHITE), "levels" in d,
                   float(d["step_db"]))

    def groups(self, J: int, sample_rate: int) -> list[np.ndarray]:
        """Frequency-ordered band indices of each group (groups without a band are kept empty)."""
        centre = subband_centres_hz(J, sample_rate)
        return [np.nonzero((centre >= a) & (centre < b))[0] for a, b in zip(self.edges_hz[:-1], self.edges_hz[1:])]


# -- encoder side ---------------------------------------------------------------------------------

def to_mid_side(coef: np.ndarray) -> np.ndarray:
    """Two channels ``[2, ...]`` as mid and side, ``(L + R) / sqrt 2`` and ``(L - R) / sqrt 2`` (orthonormal)."""
    if coef.shape[0] != 2:
        raise ValueError(f"mid/side needs two channels, got {coef.shape[0]}")
    return np.stack([(coef[0] + coef[1]) * _H, (coef[0] - coef[1]) * _H])


def measure(coef: np.ndarray, groups: list[np.ndarray], block: int, mid_side: bool = False,
            step_db: float = STEP_DB) -> np.ndarray:
    """Levels ``[blocks, C, G]`` of coefficients ``[C, P (frequency order), n]``.

    A level is the group's mean energy per coefficient over the block, in ``step_db`` steps
    above ``FLOOR_DB`` (0: at or below the floor, or an empty group). With ``mid_side``
    the two channels are measured as mid and side.
    """
    if mid_side:
        coef = to_mid_side(coef)
    c, _, n = coef.shape
    nb = -(-n // block)
    out = np.zeros((nb, c, len(groups)), dtype=np.int32)
    used = [g for g, idx in enumerate(groups) if idx.size]
    if n == 0 or not used:
        return out
    # Groups are adjacent runs of bands (consecutive edges): one reduceat over the bands from the first
    # group's to the last one's sums each group's bands, then each block's frames are summed. Float32
    # throughout: a few hundred terms are within 1e-5 of the exact sum, a level's step is 40 % or more.
    lo, hi = int(groups[used[0]][0]), int(groups[used[-1]][-1]) + 1
    power = np.square(coef[:, lo:hi], dtype=np.float32)  # [C, bands, n]
    sums = np.add.reduceat(power, [int(groups[g][0]) - lo for g in used], axis=1)  # [C, used, n]
    if nb * block > n:
        sums = np.concatenate([sums, np.zeros((c, len(used), nb * block - n), dtype=np.float32)], axis=2)
    sums = sums.reshape(c, len(used), nb, block).sum(axis=3, dtype=np.float64)  # [C, used, blocks]
    counts = np.minimum(block, n - block * np.arange(nb))
    sizes = np.array([groups[g].size for g in used])
    mean = sums / (sizes[None, :, None] * counts[None, None, :])
    with np.errstate(divide="ignore"):
        db = 10 * np.log10(mean)
    out[:, :, used] = np.clip(np.rint((db - FLOOR_DB) / step_db), 0, MAX_LEVEL).astype(np.int32).transpose(2, 0, 1)
    return out


def _predictions(levels: np.ndarray, planar: bool = False) -> np.ndarray:
    """Each level's prediction: the previous block's (first block: the previous group's, then 32);
    ``planar``: from the second block and group on, ``L[b-1, g] + L[b, g-1] - L[b-1, g-1]``."""
    pred = np.empty_like(levels)
    pred[1:] = levels[:-1]
    if planar:
        pred[1:, :, 1:] += levels[1:, :, :-1] - levels[:-1, :, :-1]
    pred[0, :, 1:] = levels[0, :, :-1]
    pred[0, :, 0] = 32
    return pred


def _scales(shape: tuple[int, ...], planar: bool, step_db: float) -> np.ndarray:
    """Laplace scales of the differences, in levels: fitted for 1.5-dB steps, the planar ones per step."""
    scales = np.full(shape, PLANAR_SCALE[step_db] if planar else NEXT_SCALE * STEP_DB / step_db)
    scales[0] = FIRST_SCALE * STEP_DB / step_db
    return scales


def encode_levels(levels: np.ndarray, planar: bool = False, step_db: float = STEP_DB) -> bytes:
    """Range-coded levels ``[blocks, C, G]`` followed by their byte length (u16); all zero: the length alone.

    ``planar``: predicted from the block before and the group below (header ``"levels": "planar"``)."""
    if not levels.any():  # silence (or nothing above the floor): two bytes
        return _TAIL.pack(0)
    enc = constriction.stream.queue.RangeEncoder()
    d = (levels - _predictions(levels, planar)).astype(np.int32)
    enc.encode(d.ravel(), _PLANAR_DELTA if planar else _DELTA, np.zeros(d.size),
               _scales(d.shape, planar, step_db).ravel())
    body = enc.get_compressed().tobytes()
    return body + _TAIL.pack(len(body))


def split_payload(payload: bytes) -> tuple[bytes, bytes]:
    """``(v2 payload, fill section)`` of a packet whose stream carries fill levels."""
    if len(payload) < _TAIL.size:
        raise BitstreamError("packet too short for its noise-fill section")
    (n,) = _TAIL.unpack(payload[-_TAIL.size :])
    if n > len(payload) - _TAIL.size or n % 4:
        raise BitstreamError("noise-fill section length does not fit its packet")
    cut = len(payload) - _TAIL.size - n
    return payload[:cut], payload[cut : cut + n]


def decode_levels(section: bytes, blocks: int, channels: int, groups: int, planar: bool = False,
                  step_db: float = STEP_DB) -> np.ndarray:
    """Inverse of :func:`encode_levels` (without the length); a corrupt section is a BitstreamError."""
    if not section:
        return np.zeros((blocks, channels, groups), dtype=np.int32)
    if blocks < 1:
        raise BitstreamError("noise-fill levels in a packet without frames")
    words = np.frombuffer(section, dtype=np.uint32)
    shape = (blocks, channels, groups)
    try:
        dec = constriction.stream.queue.RangeDecoder(words)
        d = np.asarray(dec.decode(_PLANAR_DELTA if planar else _DELTA, np.zeros(blocks * channels * groups),
                                  _scales(shape, planar, step_db).ravel()), dtype=np.int64).reshape(shape)
    except Exception as exc:  # constriction raises on inconsistent data
        raise BitstreamError(f"corrupt noise-fill section ({exc})") from None
    # The first block predicts along groups, the rest along blocks; planar, the step from one block
    # to the next is the running sum of the differences along groups: L[b] = L[b-1] + cumsum_g d[b].
    levels = np.empty_like(d)
    levels[0] = 32 + np.cumsum(d[0], axis=-1)
    steps = np.cumsum(d[1:], axis=-1) if planar else d[1:]
    levels[1:] = levels[0] + np.cumsum(steps, axis=0)
    if levels.min(initial=0) < 0 or levels.max(initial=0) > MAX_LEVEL:
        raise BitstreamError("noise-fill level outside 0..63")
    return levels.astype(np.int32)


# -- decoder side ---------------------------------------------------------------------------------

def band_noise(edges_hz: tuple[int, ...], sample_rate: int, J: int) -> np.ndarray:
    """Packet coefficients ``[G, P, TABLE_SAMPLES / P]`` (frequency order) of one period of a periodic
    noise signal per group, of unit power and with a spectrum that is zero outside the group's
    ``[edges[g], edges[g+1])`` Hz (all zero if no bin is in it).

    The transform runs over the period with ``_WRAP`` samples of it wrapped around on each side
    (more than the filters reach), so the columns repeat exactly: column ``t`` is the noise of
    every frame ``t + k * TABLE_SAMPLES / P``."""
    n, p = TABLE_SAMPLES, 2**J
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    x = np.zeros((len(edges_hz) - 1, n), dtype=np.float32)
    for g, (lo, hi) in enumerate(zip(edges_hz[:-1], edges_hz[1:])):
        inside = np.nonzero((freqs >= lo) & (freqs < hi))[0]
        if inside.size:
            rng = np.random.default_rng([SEED, g])
            spectrum = np.zeros(freqs.size, dtype=np.complex128)
            spectrum[inside] = rng.standard_normal(inside.size) + 1j * rng.standard_normal(inside.size)
            noise = np.fft.irfft(spectrum, n)
            x[g] = noise / np.sqrt(np.mean(np.square(noise)))
    wrap = -(-max(_WRAP, 8 * p) // p) * p  # the J-level filters reach about 8 * 2**J samples
    nat = freq_to_natural(J)
    coef = packet_lifting(np.concatenate([x[:, n - wrap :], x, x[:, :wrap]], axis=1), J)[:, nat]
    coef *= band_scales(J)[nat].astype(np.float32)[None, :, None]
    return coef[:, :, wrap // p : (wrap + n) // p]


_WRAP = 8192  # samples of the period wrapped around each side before the transform, at least


_TABLES: dict = {}  # (encoder digest, layout) -> NoiseFill._tables: a model decodes many streams


def block_scales(decoded: np.ndarray, want: np.ndarray, got: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
                 fraction: float) -> np.ndarray:
    """The fill's energy rule: per block, the amplitude scale of a pair's noise that adds ``fraction``
    of what the decode ``[cols, n]`` misses of ``want`` (mean energy per coefficient), given the noise's
    own mean energy per block ``got``; 0 where nothing is missing."""
    have = np.add.reduceat(np.square(decoded, dtype=np.float64).mean(axis=0), starts) / sizes
    deficit = fraction * (want - have)
    return np.sqrt(np.divide(deficit, got, out=np.zeros_like(got), where=(deficit > 0) & (got > 0)))


class NoiseFill:
    """Adds the missing high-band energy to decoded coefficient frames, block by block.

    ``push(levels, frames)`` queues a packet's levels for its ``frames`` frames (``None``:
    nothing to fill, e.g. concealed frames); ``apply(coef)`` takes the next decoded
    coefficient frames ``[C*P, n]`` (frequency order, channel-major) and returns the filled
    frames of every *complete* block so far (a block split across calls -- only with a
    look-ahead decoder -- waits for its last frame). Per block and (channel, group): the
    noise adds ``fraction * max(target - decoded, 0)`` of mean energy per coefficient, so a
    block the decoder already renders loud enough gets nothing. With ``spec.mid_side`` the
    channels are mid and side: each gets its own noise, and left/right get their sum and
    difference, so the fill is as correlated between channels as the original was.
    """

    def __init__(self, spec: FillSpec, encoder: np.ndarray, channels: int, J: int, sample_rate: int):
        self.spec = spec
        self.channels, self.bands = channels, 2**J
        if spec.mid_side and channels != 2:
            raise BitstreamError(f"a mid/side noise fill needs two channels, the stream has {channels}")
        self.groups = spec.groups(J, sample_rate)
        self._J, self._rate = J, sample_rate
        self._encoder = np.asarray(encoder, dtype=np.float64).reshape(-1, channels * self.bands)
        # Each (channel, group) pair's white noise columns, as directions in the coefficient space
        # [C*P, cols]: unit vectors of its bands (left/right), or their mid/side combinations.
        sizes = [len(idx) for _ in range(channels) for idx in self.groups]
        edges = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._pairs = [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
        basis = np.zeros((channels * self.bands, int(edges[-1])))
        k = 0
        for c in range(channels):
            for idx in self.groups:
                for b in idx:
                    if spec.mid_side:
                        basis[b, k], basis[self.bands + b, k] = np.sqrt(0.5), np.sqrt(0.5) * (1 if c == 0 else -1)
                    else:
                        basis[c * self.bands + b, k] = 1.0
                    k += 1
        self._basis = basis
        # The same directions as rows to gather: channel * P + band, of the decode itself (left/right)
        # or of its mid/side rotation.
        self._rows = np.array([c * self.bands + b for c in range(channels) for idx in self.groups for b in idx],
                              dtype=np.intp)
        self.reset()
        if spec.noise == BAND_LIMITED:  # built now, not in the middle of a live stream's first packets
            self._tables

    @functools.cached_property
    def _projector(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(Q, local)``: ``Q = (I - E^+ E) B`` takes a pair's white noise into the encoder's null
        space; ``local[i] = B_i^T (I - E^+ E) B_i``, what pair ``i``'s projected noise leaves in its
        own directions."""
        e, b = self._encoder, self._basis
        q = (np.eye(e.shape[1]) - np.linalg.pinv(e) @ e) @ b
        local = [np.ascontiguousarray(b[:, sl].T @ q[:, sl], dtype=np.float32) for sl in self._pairs]
        return np.ascontiguousarray(q, dtype=np.float32), local

    @property
    def _tables(self) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Band-limited noise: ``(noise, powers, R)``. ``noise[g]`` ``[L, P]``: group ``g``'s periodic noise
        by frame (channel ``ch`` reads it ``ch * L / C`` frames on, so channels differ); ``powers[i]`` ``[L]``:
        the mean power per frame of pair ``i``'s noise, placed in its channel (mid/side: in both, with
        signs) and projected into the null space, in the pair's own directions; ``R``: an orthonormal
        basis of the encoder's row space, so the projection is ``M - R (R^T M)``. Built once per model
        and layout (0.1-0.25 s, 6.3 MB at J = 8)."""
        import hashlib

        spec, e = self.spec, self._encoder
        key = (hashlib.sha256(e.tobytes()).hexdigest(), e.shape, self.channels, self.bands, self._rate,
               spec.edges_hz, spec.mid_side)
        if key not in _TABLES:
            c, p, g = self.channels, self.bands, len(self.groups)
            r = np.ascontiguousarray(np.linalg.qr(e.T)[0], dtype=np.float32)  # [C*P, latents]
            noise = band_noise(spec.edges_hz, self._rate, self._J)  # [G, P, L]
            length = noise.shape[2]
            # Pair i's projected noise in its own directions B_i^T (N_i - R R^T N_i) = B_i^T N_i - (B_i^T R)(R^T N_i),
            # with R^T N_i from the rows of R its channel (or both, for mid/side) holds: no [C*P, L] products.
            basis_r = self._in_pair_directions(r)  # [cols, latents]: B^T R
            powers = []
            for i, sl in enumerate(self._pairs):
                ch, k = divmod(i, g)
                if sl.stop == sl.start:
                    powers.append(np.zeros(length))
                    continue
                src = np.roll(noise[k], -(ch * length // c), axis=1)  # [P, L]
                if spec.mid_side:  # the noise in both channels, (N, N) / sqrt 2 for mid, (N, -N) for side
                    coded = (r[:p] + (1 if ch == 0 else -1) * r[p:]).T @ (src * _H)
                else:  # in its own channel's rows alone
                    coded = r[ch * p : (ch + 1) * p].T @ src
                # B_i^T N_i is the group's rows of the noise either way (mid/side of (N, +-N) / sqrt 2 is N)
                left = src[self.groups[k]] - basis_r[sl] @ coded
                powers.append(np.square(left, dtype=np.float64).mean(axis=0))
            while len(_TABLES) >= 4:
                _TABLES.pop(next(iter(_TABLES)))
            _TABLES[key] = (np.ascontiguousarray(noise.transpose(0, 2, 1)), powers, r)
        return _TABLES[key]

    def _in_pair_directions(self, coef: np.ndarray) -> np.ndarray:
        """``B^T coef`` ``[cols, n]`` without the product: the pairs' rows of the decode or of its mid/side."""
        if self.spec.mid_side:
            coef = to_mid_side(coef.reshape(2, self.bands, -1)).reshape(coef.shape)
        return coef[self._rows]

    def reset(self) -> None:
        self.frame = 0  # absolute index of the first frame not returned yet
        self._blocks: list[tuple[int, np.ndarray | None]] = []  # (frames, target [C, G] or None), in order
        self._held = np.zeros((self.channels * self.bands, 0), dtype=np.float32)

    def push(self, levels: np.ndarray | None, frames: int) -> None:
        if levels is None:
            self._blocks.append((frames, None))
            return
        b = self.spec.block
        blocks = -(-frames // b)
        if levels.shape[0] != blocks:
            raise BitstreamError(f"{levels.shape[0]} noise-fill blocks for {frames} frames")
        for i in range(blocks):
            n = min(b, frames - i * b)
            lv = levels[i]
            self._blocks.append((n, np.where(lv > 0, 10 ** ((FLOOR_DB + self.spec.step_db * lv) / 10), 0.0) if lv.any()
                                 else None))

    def apply(self, coef: np.ndarray) -> np.ndarray:
        coef = np.concatenate([self._held, np.asarray(coef, dtype=np.float32)], axis=1)
        done, k = 0, 0
        while k < len(self._blocks) and done + self._blocks[k][0] <= coef.shape[1]:
            done += self._blocks[k][0]
            k += 1
        if done < coef.shape[1] and k == len(self._blocks):
            raise BitstreamError("decoded frames without noise-fill levels")
        blocks, self._blocks = self._blocks[:k], self._blocks[k:]
        out, self._held = coef[:, :done], coef[:, done:].copy()
        first, self.frame = self.frame, self.frame + done
        if done and any(t is not None for _, t in blocks):
            self._fill(out, blocks, first)
        return out

    def _fill(self, coef: np.ndarray, blocks: list, first: int) -> None:
        """Fill the complete ``blocks`` of ``coef`` (in place), whose first frame is frame ``first``."""
        sizes = np.array([m for m, _ in blocks])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        targets = np.stack([t if t is not None else np.zeros((self.channels, len(self.groups))) for _, t in blocks])
        decoded = self._in_pair_directions(coef)  # [cols, n], before any noise is added
        fill = self._fill_band_limited if self.spec.noise == BAND_LIMITED else self._fill_white
        fill(coef, first, sizes, starts, targets, decoded)

    def _fill_white(self, coef: np.ndarray, first: int, sizes: np.ndarray, starts: np.ndarray,
                    targets: np.ndarray, decoded: np.ndarray) -> None:
        """White noise per block, seeded by the block's first frame; one product into the null space."""
        q, local = self._projector
        cols = q.shape[1]
        white = np.empty((cols, coef.shape[1]), dtype=np.float32)
        for m, a in zip(sizes, starts):  # a block's noise depends on its first frame alone
            white[:, a : a + m] = np.random.default_rng([SEED, first + a]).standard_normal((cols, m), dtype=np.float32)
        for i, (sl, qi) in enumerate(zip(self._pairs, local)):
            ch, g = divmod(i, len(self.groups))
            w = white[sl]
            want = targets[:, ch, g]
            if not w.shape[0] or not want.any():
                w[:] = 0.0
                continue
            # Energy per block of this pair's projected noise, in the pair's directions.
            got = np.add.reduceat(np.square(qi @ w, dtype=np.float64).mean(axis=0), starts) / sizes
            scale = block_scales(decoded[sl], want, got, starts, sizes, self.spec.fraction)
            w *= np.repeat(scale, sizes).astype(np.float32)[None, :]
        coef += q @ white  # one product: every pair's scaled noise, all in the encoder's null space

    def _fill_band_limited(self, coef: np.ndarray, first: int, sizes: np.ndarray, starts: np.ndarray,
                           targets: np.ndarray, decoded: np.ndarray) -> None:
        """The same per-block energy rule as the white fill: every pair's scaled noise summed by frame,
        then projected into the null space once (two products with the row-space basis)."""
        noise, powers, r = self._tables
        n, p, length = coef.shape[1], self.bands, noise.shape[1]
        frames = first + np.arange(n)
        added = None  # [n, C*P]
        for i, sl in enumerate(self._pairs):
            ch, g = divmod(i, len(self.groups))
            want = targets[:, ch, g]
            if sl.stop == sl.start or not want.any():
                continue
            got = np.add.reduceat(powers[i][frames % length], starts) / sizes
            scale = block_scales(decoded[sl], want, got, starts, sizes, self.spec.fraction)
            if not scale.any():
                continue
            if added is None:
                added = np.zeros((n, self.channels * p), dtype=np.float32)
            rows = noise[g][(frames + ch * length // self.channels) % length]  # [n, P]
            rows *= np.repeat(scale, sizes).astype(np.float32)[:, None]
            if self.spec.mid_side:
                rows *= _H
                added[:, :p] += rows
                added[:, p:] += rows if ch == 0 else -rows
            else:
                added[:, ch * p : (ch + 1) * p] += rows
        if added is not None:
            added -= (added @ r) @ r.T
            coef += added.T
