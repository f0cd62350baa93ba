"""Where the songs and sound fonts come from: Debian packages and Doom WAD files.

Nothing is installed system-wide: each package is fetched with
``apt-get download`` into ``CACHE/debs/`` and unpacked with ``dpkg -x`` into
``CACHE/root/PKG/`` (``apt-get update`` runs once, only if a download fails).

Freedoom keeps its music inside WAD files.  A WAD is a 12-byte header
``<4sii`` (magic ``IWAD``/``PWAD``, lump count, directory offset) and a
directory of 16-byte entries ``<ii8s`` (offset, size, NUL-padded name).  Music
lumps are named ``D_*``; those that begin with ``MThd`` are plain Standard
MIDI Files (older Doom music is in the MUS format, which is skipped).
"""
from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .stems_midi import StemSetError

WAD_HEADER = struct.Struct("<4sii")
WAD_ENTRY = struct.Struct("<ii8s")


@dataclass(frozen=True)
class WadLump:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class PackageInfo:
    """A Debian package that provides songs: its split and licence, package level."""

    name: str
    split: str  # "train" or "test"
    artist: str  # the "Artist" part of musdb's "Artist - Title" track names
    licence: str


# Licence notes as the packages' debian/copyright files state them; the full
# texts are in CACHE/root/PKG/usr/share/doc/PKG/copyright.
SONG_PACKAGES = (
    PackageInfo("freedoom", "train", "Freedoom",
                "BSD-3-Clause-style Freedoom licence, (c) Contributors to the Freedoom project"),
    PackageInfo("openttd-openmsx", "test", "OpenMSX",
                "GPL-2.0, (c) 2010 various authors (credits in readme.txt)"),
    PackageInfo("planetblupi-music-midi", "test", "Planet Blupi",
                "GPL-3+, (c) 2017-2018 Mathieu Schroeter"),
)
GM_FONT = ("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2", "MIT, (c) Frank Wen")
DRUM_FONTS = ("avldrums.lv2-soundfont",
              ("usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2", "usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"),
              "CC-BY-SA-3.0, (c) 2015 Glen MacArthur (AVL Drumkits)")


@dataclass(frozen=True)
class SongSource:
    """One MIDI song and where it came from."""

    name: str  # track folder name, "Artist - Title"
    split: str
    package: str
    package_version: str
    origin: str  # "freedoom2.wad:D_RUNNIN" or a path inside the package
    licence: str
    data: bytes  # the Standard MIDI File

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.data).hexdigest()


def read_wad_directory(data: bytes) -> list[WadLump]:
    """Parse a WAD's directory; a malformed file raises :class:`StemSetError`."""
    if len(data) < WAD_HEADER.size:
        raise StemSetError(f"not a WAD: {len(data)} bytes, shorter than its header")
    magic, count, offset = WAD_HEADER.unpack_from(data, 0)
    if magic not in (b"IWAD", b"PWAD"):
        raise StemSetError(f"not a WAD: magic {magic!r}")
    if count < 0 or offset < WAD_HEADER.size or offset + count * WAD_ENTRY.size > len(data):
        raise StemSetError(f"WAD directory out of bounds: {count} lumps at {offset}, file {len(data)} bytes")
    lumps = []
    for i in range(count):
        lump_offset, size, raw = WAD_ENTRY.unpack_from(data, offset + i * WAD_ENTRY.size)
        name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
        if size < 0 or lump_offset < 0 or lump_offset + size > len(data):
            raise StemSetError(f"WAD lump {name!r} out of bounds")
        lumps.append(WadLump(name, lump_offset, size))
    return lumps


def wad_midi_lumps(data: bytes) -> list[tuple[str, bytes]]:
    """``(lump_name, midi_bytes)`` for every ``D_*`` music lump that is a MIDI file."""
    out = []
    for lump in read_wad_directory(data):
        body = data[lump.offset:lump.offset + lump.size]
        if lump.name.startswith("D_") and body[:4] == b"MThd":
            out.append((lump.name, body))
    return out


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def fetch_debian_package(name: str, cache: Path) -> tuple[Path, str]:
    """Download and unpack one Debian package; returns ``(unpacked_root, version)``.

    Idempotent: a package already unpacked under ``cache`` is reused.
    """
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        if shutil.which("apt-get") is None:
            raise StemSetError(f"cannot fetch {name}: apt-get not found (this builder needs Debian)")
        result = _run(["apt-get", "download", name], cwd=debs)
        if result.returncode != 0:
            _run(["apt-get", "update"])
            result = _run(["apt-get", "download", name], cwd=debs)
        found = sorted(debs.glob(f"{name}_*.deb"))
        if result.returncode != 0 or not found:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise StemSetError(f"apt-get download {name} failed: {last}")
    deb = found[-1]
    version = deb.name.split("_")[1]
    root = cache / "root" / name
    if not (root / ".unpacked").exists():
        partial = root.with_name(name + ".partial")  # unpack aside, then rename
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
        partial.mkdir(parents=True)
        result = _run(["dpkg", "-x", str(deb), str(partial)])
        if result.returncode != 0:
            raise StemSetError(f"dpkg -x {deb.name} failed: {result.stderr.strip()}")
        (partial / ".unpacked").write_text(deb.name + "\n")
        partial.rename(root)
    return root, version


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name} ({n})", n + 1
    taken.add(candidate)
    return candidate


def collect_songs(cache: Path, packages=SONG_PACKAGES) -> tuple[list[SongSource], list[tuple[str, str]]]:
    """Fetch the song packages and list their MIDI songs, byte-identical copies once.

    Returns ``(songs, skipped)`` where ``skipped`` holds ``(origin, reason)``.
    A package that cannot be fetched is a skip, not an error, so one missing
    package still leaves a (smaller) set.
    """
    songs, skipped, seen, names = [], [], {}, set()
    for pkg in packages:
        try:
            root, version = fetch_debian_package(pkg.name, cache)
        except StemSetError as exc:
            skipped.append((pkg.name, f"package unavailable: {exc}"))
            continue
        found = []  # (origin, title, bytes)
        for wad in sorted(root.rglob("*.wad")):
            try:
                lumps = wad_midi_lumps(wad.read_bytes())
            except StemSetError as exc:
                skipped.append((wad.name, str(exc)))
                continue
            found += [(f"{wad.name}:{lump}", lump[2:], body) for lump, body in lumps]
        for mid in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".mid", ".midi")):
            found.append((str(mid.relative_to(root)), mid.stem, mid.read_bytes()))
        for origin, title, body in found:
            digest = hashlib.sha1(body).hexdigest()
            if digest in seen:
                skipped.append((origin, f"duplicate of {seen[digest]}"))
                continue
            seen[digest] = origin
            name = _unique(f"{pkg.artist} - {title}", names)
            songs.append(SongSource(name, pkg.split, pkg.name, version, origin, pkg.licence, body))
    return songs, skipped


def fetch_soundfonts(cache: Path, drum_kits: bool = True) -> tuple[Path, list[Path], list[str]]:
    """``(gm_font, drum_kit_fonts, notes)``: the GM font is required, drum kits optional."""
    root, _ = fetch_debian_package(GM_FONT[0], cache)
    gm = root / GM_FONT[1]
    if not gm.is_file():
        raise StemSetError(f"{GM_FONT[0]} has no {GM_FONT[1]}")
    kits, notes = [], []
    if drum_kits:
        try:
            root, _ = fetch_debian_package(DRUM_FONTS[0], cache)
            kits = [root / rel for rel in DRUM_FONTS[1] if (root / rel).is_file()]
            if not kits:
                notes.append(f"{DRUM_FONTS[0]} has no kit .sf2: GM drums used")
        except StemSetError as exc:
            notes.append(f"drum kits unavailable ({exc}): GM drums used")
    return gm, kits, notes
