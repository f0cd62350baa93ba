"""Render stem MIDI files with fluidsynth and mix them into exact-sum 16-bit stems.

Rendering is the only step that needs outside software: Debian's
``fluidsynth`` binary and SoundFont files (see :mod:`separation.stems_sources`).
Each stem is rendered on its own, in floating point, with the same settings::

    fluidsynth -ni -q -g 0.3 -r 44100 -O float -T wav -F out.wav FONT.sf2 stem.mid

The drum stem can use a real multisampled acoustic kit (the AVL drum kits)
for the kit pieces it has, and the GM font for the rest; both halves are
rendered and added, see :func:`split_drum_kit`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import mido
import numpy as np
import soundfile as sf

from .stems_midi import BANK_SELECT, DRUM_CHANNEL, StemSetError, assemble_tracks, is_note_off, is_note_on, timeline

SAMPLE_RATE = 44100
RENDER_GAIN = 0.3  # fluidsynth's master gain; the shared song gain is applied afterwards
PEAK = 0.9  # the mixture's peak after the shared gain, in full scale
FADE_SECONDS = 1.0  # raised-cosine fade where a song is cut at --max-seconds
SILENT_DBFS = -60.0  # a stem quieter than this (RMS) counts as silent
INT16_SCALE = 32768.0  # soundfile, musdb and numpy readers all divide by 2**15


def find_fluidsynth(install: bool = True) -> str:
    """Path of the ``fluidsynth`` binary, installing Debian's package if allowed.

    Installing needs root and apt; anything short of a working binary raises
    :class:`StemSetError` with the command that would fix it.
    """
    found = shutil.which("fluidsynth")
    if found or not install:
        if found:
            return found
        raise StemSetError("fluidsynth not found: install it (Debian: apt-get install -y fluidsynth)")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise StemSetError("fluidsynth not found and cannot be installed here (needs root and apt-get): "
                           "apt-get install -y fluidsynth")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "fluidsynth"]
    if subprocess.run(cmd, capture_output=True, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env)
        subprocess.run(cmd, capture_output=True, env=env)
    found = shutil.which("fluidsynth")
    if not found:
        raise StemSetError("apt-get install fluidsynth failed; install it by hand")
    return found


def render_midi(midi: mido.MidiFile, font: Path, *, fluidsynth: str = "fluidsynth",
                sample_rate: int = SAMPLE_RATE, timeout: float = 600.0) -> np.ndarray:
    """Render a MIDI file to float32 audio ``[T, 2]`` with fluidsynth.

    fluidsynth plays until the last track ends *and* the last voice has
    died away, so the result can be longer than the MIDI (release tails).
    A failed render raises :class:`StemSetError` with fluidsynth's last words.
    """
    with tempfile.TemporaryDirectory(prefix="stem-render-") as tmp:
        mid, wav = Path(tmp) / "stem.mid", Path(tmp) / "stem.wav"
        midi.save(mid)
        cmd = [fluidsynth, "-ni", "-q", "-g", str(RENDER_GAIN), "-r", str(sample_rate),
               "-O", "float", "-T", "wav", "-F", str(wav), str(font), str(mid)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StemSetError(f"fluidsynth failed: {exc}") from None
        if result.returncode != 0 or not wav.exists():
            last = (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]
            raise StemSetError(f"fluidsynth failed on {font.name}: {last}")
        audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    if rate != sample_rate or audio.shape[1] != 2:
        raise StemSetError(f"fluidsynth wrote {audio.shape[1]} channels at {rate} Hz, expected stereo {sample_rate}")
    return audio


# AVL drum kits (avldrums.lv2-soundfont) have their own key map: a 4-piece kit
# with GM-compatible kick/snare/hats/cymbals but only two toms, and key 48 is a
# hi-hat swish, key 50 a crash choke.  GM keys are mapped onto the kit here;
# keys without an acoustic-kit equivalent (Latin percussion, whistles, ...)
# stay on the GM drum kit, see :func:`split_drum_kit`.
AVL_KEY_MAP = {
    35: 36, 36: 36, 37: 37, 38: 38, 39: 39, 40: 40,  # kicks, snares, clap
    41: 41, 43: 41, 45: 45, 47: 45, 48: 45, 50: 45,  # floor tom, rack tom
    42: 42, 44: 44, 46: 46,  # hi-hat closed / pedal / open (AVL "semi")
    49: 49, 52: 57, 55: 55, 57: 57,  # crashes, china -> crash 2, splash
    51: 51, 53: 53, 59: 51,  # ride, ride bell
    54: 54, 56: 56, 70: 61,  # tambourine, cowbell, maracas
}
# Drum-channel programs whose character an acoustic kit would betray: GM2's
# Electronic, TR-808, Orchestra and SFX kits.  Every other program (standard,
# room, power, jazz, brush and the numbers FluidR3 replaces by Standard) is
# an acoustic kit.
NON_ACOUSTIC_KITS = frozenset({24, 25, 48, 56})


def split_drum_kit(drums: mido.MidiFile, key_map: dict = AVL_KEY_MAP, kit_channel: int = 0):
    """Divide a drum stem between an acoustic kit sound font and the GM kit.

    Returns ``(kit_midi, gm_midi)``.  Notes whose GM key is in ``key_map`` and
    that are played while the drum channel selects an acoustic kit (any
    program outside ``NON_ACOUSTIC_KITS``) go to ``kit_midi``, re-keyed and
    moved to ``kit_channel`` (a single-preset kit font is a melodic bank-0
    program-0 instrument, not a bank-128 drum set); the drum channel's
    controllers follow them there, with program and bank forced to 0.
    Everything else stays in ``gm_midi`` for the GM font's drum kits.  Both
    keep all meta events, so they render to the same length.
    """
    kit = [[] for _ in drums.tracks]
    gm = [[] for _ in drums.tracks]
    program, routed = 0, defaultdict(list)
    for tick, index, msg in timeline(drums):
        channel = getattr(msg, "channel", None)
        if channel is not None and channel != DRUM_CHANNEL:
            gm[index].append((tick, msg))  # nothing of the kit plays there
            continue
        if msg.type == "program_change":
            program = msg.program
        if is_note_on(msg):
            to_kit = msg.note in key_map and program not in NON_ACOUSTIC_KITS
            routed[msg.note].append(to_kit)
            if to_kit:
                kit[index].append((tick, msg.copy(channel=kit_channel, note=key_map[msg.note])))
            else:
                gm[index].append((tick, msg))
        elif is_note_off(msg) and routed[msg.note]:
            if routed[msg.note].pop(0):
                kit[index].append((tick, msg.copy(channel=kit_channel, note=key_map[msg.note])))
            else:
                gm[index].append((tick, msg))
        else:
            gm[index].append((tick, msg))
            if channel is None:  # meta and sysex: both halves
                kit[index].append((tick, msg))
            elif msg.type == "program_change":
                kit[index].append((tick, msg.copy(channel=kit_channel, program=0)))
            elif not (msg.type == "control_change" and msg.control in BANK_SELECT):
                kit[index].append((tick, msg.copy(channel=kit_channel)))
    return assemble_tracks(drums, kit), assemble_tracks(drums, gm)


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad or crop ``[T, C]`` audio to ``length`` samples."""
    if len(audio) >= length:
        return audio[:length]
    return np.concatenate([audio, np.zeros((length - len(audio), audio.shape[1]), audio.dtype)])


def fade_out(audio: np.ndarray, samples: int) -> np.ndarray:
    """Raised-cosine fade over the last ``samples`` samples of ``[T, C]`` audio.

    Applied identically to every stem it is a linear map, so the stems still
    sum to the (equally faded) mixture.
    """
    samples = min(samples, len(audio))
    if samples <= 0:
        return audio
    ramp = 0.5 * (1.0 + np.cos(np.pi * (np.arange(samples) + 1) / samples))  # 1 -> 0
    out = audio.copy()
    out[-samples:] *= ramp[:, None].astype(audio.dtype)
    return out


def mix_to_int16(stems: dict[str, np.ndarray], peak: float = PEAK) -> tuple[dict, np.ndarray, float]:
    """One shared gain, 16-bit stems, and a mixture that is exactly their sum.

    Returns ``(int16_stems, int16_mixture, gain)``.

    Quantizing each file on its own would break the sum: with
    ``q(x) = round(32768 x)``, ``q(a) + q(b) != q(a + b)`` by up to one LSB
    per stem.  So the stems are quantized first and the mixture is *defined*
    as the integer sum of the quantized stems:

        m = sum_s q(g x_s)     (exact in int32)

    which reads back as floats (``/ 32768``) with ``mixture == sum(stems)``
    up to float32 rounding (~1e-7).  The gain ``g`` puts the larger of the
    mixture's and any single stem's peak at ``peak`` (0.9 of full scale);
    rounding moves each stem by at most 1/2 LSB, so the integer mixture stays
    within ``peak + 2 LSB`` of full scale -- no clipping, checked below.
    The gain is the same for all stems of a song, so their balance is the
    one the MIDI file asked for.
    """
    names = list(stems)
    mixture = np.sum([stems[n] for n in names], axis=0, dtype=np.float64)
    loudest = max([np.abs(mixture).max(initial=0.0)] + [np.abs(stems[n]).max(initial=0.0) for n in names])
    if loudest <= 0:
        raise StemSetError("the song rendered to silence")
    gain = float(peak / loudest)
    quantized = {n: np.round(stems[n].astype(np.float64) * gain * INT16_SCALE).astype(np.int32) for n in names}
    total = np.sum([quantized[n] for n in names], axis=0)
    if np.abs(total).max() > 32767 or any(np.abs(q).max() > 32767 for q in quantized.values()):
        raise StemSetError("16-bit mixture would clip")  # unreachable for peak <= 0.999
    return {n: q.astype(np.int16) for n, q in quantized.items()}, total.astype(np.int16), gain


def rms_dbfs(audio: np.ndarray) -> float:
    """RMS level of int16 audio in dB relative to full scale (-inf for digital silence)."""
    x = audio.astype(np.float64) / INT16_SCALE
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
