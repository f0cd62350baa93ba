"""``walloc-audio`` command line: parsing and display only; the work lives in the library.

Every user error (a :class:`~walloc_audio.errors.WallocError`) becomes one line
on stderr and a non-zero exit code; Ctrl-C exits with 130 and leaves no partial
output. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterable, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import UsageError, WallocError

EXIT_CODES = ("Exit codes: 0 done; 1 other error; 2 usage error; 3 bad or corrupt .wlc; 4 unreadable audio; "
              "5 model missing or damaged; 6 output cannot be written; 130 interrupted (no partial output).")
TORCH_MODULES = ("torch", "torchaudio", "pytorch_lightning", "lightning", "torchmetrics", "asteroid", "musdb",
                 "museval", "openunmix")
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="WaLLoC audio codec: encode, decode and inspect .wlc files; separate music from them.", epilog=EXIT_CODES)


def _print_table(table) -> None:
    """A wide table on stdout: whole rows through a pipe too (rich would cut them to 80 columns)."""
    (out if sys.stdout.isatty() else Console(width=160)).print(table)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"walloc-audio {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    """WaLLoC audio codec: encode, decode and inspect .wlc files."""
err = Console(stderr=True)
out = Console()


def _plan(paths: List[str], out_dir: Optional[Path], suffixes: Iterable[str], new_suffix: str) -> List[tuple[str, str]]:
    """Pairs (input, output) from ``SRC [DST]`` or ``SRC... --out-dir DIR``."""
    if out_dir is None:
        if len(paths) == 2 and not os.path.isdir(paths[0]):
            return [(paths[0], paths[1])]
        if len(paths) == 1 and not os.path.isdir(paths[0]):
            src = paths[0]
            if src == "-":
                raise UsageError("reading stdin needs an explicit output (or - for stdout)")
            return [(src, str(Path(src).with_suffix(new_suffix)))]
        raise UsageError("several inputs or a folder need --out-dir")
    from .audio import find_audio

    inputs = find_audio(paths, suffixes)
    if not inputs:
        raise WallocError("no input files found")
    if not out_dir.is_dir():
        raise WallocError(f"output folder {out_dir} does not exist")
    names = [out_dir / (Path(p).stem + new_suffix) for p in inputs]
    if len(set(names)) != len(names):
        raise WallocError("two inputs would write the same output name; use separate runs")
    return [(p, str(n)) for p, n in zip(inputs, names)]


def _check_rate_options(quality: Optional[float], bitrate: Optional[float]) -> None:
    """``--quality`` / ``--bitrate`` of encode and stream: one-line errors before any work."""
    import math

    from .ratecontrol import Q_MAX, Q_MIN

    if quality is not None and bitrate is not None:
        raise WallocError("give --quality or --bitrate, not both")
    if quality is not None and not (math.isfinite(quality) and Q_MIN <= quality <= Q_MAX):
        raise WallocError(f"--quality must be {Q_MIN:g}..{Q_MAX:g}")
    if bitrate is not None and not (math.isfinite(bitrate) and bitrate > 0):
        raise WallocError("--bitrate must be a positive number of kbps")


def _set_threads(threads: int) -> None:
    from .threads import set_threads

    set_threads(threads)


def _encode_one(src: str, dst: str, model_name: str, force: bool, fpp: int, group: int, downmix: bool,
                quality: Optional[float], kbps: Optional[float], fill: bool, threads: int, progress=None):
    from .compress import check_rate, compress_file
    from .pretrained import load_model

    _set_threads(threads)
    model = load_model(model_name)
    quality, kbps, warning = check_rate(model, quality, kbps, fpp)
    if warning:
        err.print(f"walloc-audio: {warning}", highlight=False, markup=False, soft_wrap=True)
    return compress_file(src, dst, model, overwrite=force, frames_per_packet=fpp, downmix=downmix,
                         progress=progress, group_packets=group, quality=quality, kbps=kbps, fill=fill)


def _decode_one(src: str, dst: str, force: bool, subtype: Optional[str], threads: int, progress=None):
    from .compress import decompress_file

    _set_threads(threads)
    return decompress_file(src, dst, overwrite=force, subtype=subtype, progress=progress)


def _call_with_progress(worker, src: str, dst: str, args: tuple, threads: int, verb: str, show: bool):
    """One file, with a live line (audio done, speed) on an interactive terminal."""
    if not show:
        return worker(src, dst, *args, threads)
    with Progress(SpinnerColumn(), TextColumn(f"{verb} {os.path.basename(src)}"), TextColumn("{task.fields[done]}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(verb, total=None, done="")
        done = [0.0]

        def progress(seconds: float) -> None:
            done[0] += seconds
            bar.update(task, done=f"{done[0]:.0f} s of audio")

        return worker(src, dst, *args, threads, progress)


def _run_many(jobs_list, worker, args, jobs: int, threads: int, verb: str, quiet: bool) -> list:
    """Run ``worker(src, dst, *args, threads)`` over pairs, in ``jobs`` processes, with a progress bar."""
    results, failures = [], []
    if len(jobs_list) == 1 or jobs <= 1:
        show = not quiet and err.is_terminal
        todo = ((s, d, lambda s=s, d=d: _call_with_progress(worker, s, d, args, threads, verb, show))
                for s, d in jobs_list)
        for src, dst, call in todo:
            try:
                results.append((src, dst, call()))
            except WallocError as exc:
                if len(jobs_list) == 1:
                    raise
                failures.append((src, str(exc)))
                err.print(f"[red]{src}: {exc}[/red]", highlight=False)
    else:
        with Progress(TextColumn(f"{verb}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=quiet) as bar, \
                ProcessPoolExecutor(jobs) as pool:
            task = bar.add_task(verb, total=len(jobs_list))
            futures = {pool.submit(worker, s, d, *args, 1): (s, d) for s, d in jobs_list}
            for fut in as_completed(futures):
                src, dst = futures[fut]
                try:
                    results.append((src, dst, fut.result()))
                except WallocError as exc:
                    failures.append((src, str(exc)))
                    bar.console.print(f"[red]{src}: {exc}[/red]", highlight=False)
                bar.advance(task)
    if failures:
        raise WallocError(f"{len(failures)} of {len(jobs_list)} files failed")
    return results


@app.command()
def encode(
    paths: List[str] = typer.Argument(..., help="SRC [DST.wlc], or several SRC files/folders with --out-dir"),
    model: str = typer.Option(None, "--model", "-m", help="model name (see `walloc-audio models`)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", "-o", help="write NAME.wlc files here"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite existing outputs"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="files encoded in parallel (one process each)"),
    threads: int = typer.Option(os.cpu_count() or 1, "--threads", "-t", help="threads for one file"),
    frames_per_packet: int = typer.Option(64, help="latent frames per packet (seek/loss granularity)"),
    group_packets: int = typer.Option(4, help="packets per filter call (1 = the bytes a live stream makes)"),
    downmix: bool = typer.Option(False, help="average inputs with more channels than the model"),
    quality: Optional[float] = typer.Option(None, "--quality", "-Q",
                                            help="constant quality 0..10 (default 5: ~30 kbps on mastered music "
                                                 "with stereo-5x; +1 = 3 dB less noise)"),
    bitrate: Optional[float] = typer.Option(None, "--bitrate", "-b",
                                            help="average kbps instead, container included (clamped to the model)"),
    fill: bool = typer.Option(True, "--fill/--no-fill",
                              help="send the high bands' energies so the decoder fills them with noise (~0.3 kbps)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Encode audio (WAV, FLAC, OGG, Opus, MP3, anything ffmpeg reads; - for stdin) to .wlc."""
    from .pretrained import DEFAULT_MODEL

    if not 1 <= frames_per_packet <= 4096:
        raise WallocError("--frames-per-packet must be 1..4096")
    if not 1 <= group_packets <= 64:
        raise WallocError("--group-packets must be 1..64")
    _check_rate_options(quality, bitrate)
    from .audio import AUDIO_SUFFIXES

    pairs = _plan(paths, out_dir, AUDIO_SUFFIXES, ".wlc")
    for _, dst in pairs:
        if dst != "-" and not dst.lower().endswith(".wlc"):
            raise UsageError(f"the output {dst} does not end in .wlc (two audio files? several inputs need --out-dir)")
    args = (model or DEFAULT_MODEL, force, frames_per_packet, group_packets, downmix, quality, bitrate, fill)
    for src, dst, st in _run_many(pairs, _encode_one, args, jobs, threads, "encoding", quiet):
        if not quiet and dst != "-":
            clip = f", [yellow]{st.clipped} samples clipped[/yellow]" if st.clipped else ""
            err.print(f"{src} -> {dst}: {st.duration:.2f} s, {st.bytes} bytes, {st.kbps:.1f} kbps, "
                      f"{st.duration / max(st.seconds, 1e-9):.0f}x real time{clip}", highlight=False)


@app.command()
def decode(
    paths: List[str] = typer.Argument(..., help="SRC.wlc [DST.{wav,flac,ogg,...}], or several with --out-dir"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", "-o"),
    fmt: str = typer.Option("wav", "--format", help="output suffix with --out-dir or a default DST"),
    subtype: Optional[str] = typer.Option(None, help="soundfile subtype, e.g. PCM_24 or FLOAT"),
    force: bool = typer.Option(False, "--force", "-f"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="files decoded in parallel (one process each)"),
    threads: int = typer.Option(os.cpu_count() or 1, "--threads", "-t", help="threads for one file"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Decode .wlc (or - for stdin) with the model named in its header.

    With no DST the output is SRC with the --format suffix; that default name never
    replaces an existing file, even with -f (it may be the original the .wlc was made
    from): name the output to replace it."""
    pairs = _plan(paths, out_dir, {".wlc"}, "." + fmt.lstrip("."))
    for src, dst in pairs:
        if dst != "-" and dst.lower().endswith(".wlc"):
            raise UsageError(f"the output {dst} ends in .wlc: decode writes audio (.wav, .flac, ...)")
    if len(paths) == 1 and out_dir is None and os.path.lexists(pairs[0][1]):
        raise UsageError(f"{pairs[0][1]} exists and may be the original; the default output never replaces a "
                         f"file: give the output name (and -f to replace it)")
    for src, dst, st in _run_many(pairs, _decode_one, (force, subtype), jobs, threads, "decoding", quiet):
        if not quiet and dst != "-":
            err.print(f"{src} -> {dst}: {st.samples / st.sample_rate:.2f} s, {st.channels} ch, "
                      f"{st.samples / st.sample_rate / max(st.seconds, 1e-9):.0f}x real time", highlight=False)


def _separate_one(src: str, out_dir: Path, name: Optional[str], fmt: str, wlc: bool, force: bool, threads: int,
                  progress=None):
    from separation.separator import load_separator, separate_file

    _set_threads(threads)
    return separate_file(src, out_dir, load_separator(name) if name else load_separator(), fmt=fmt, wlc=wlc,
                         overwrite=force, progress=progress)


@app.command()
def separate(
    paths: List[str] = typer.Argument(..., help="a .wlc or audio file, several, or folders"),
    out_dir: Path = typer.Option(..., "--out-dir", "-o", help="writes DIR/NAME/{drums,bass,other,vocals}.EXT"),
    separator: Optional[str] = typer.Option(None, "--separator", "-s", help="a shipped separator's name or a file"),
    fmt: str = typer.Option("wav", "--format", help="audio format of the stems (suffix)"),
    wlc: bool = typer.Option(False, "--wlc", help="write each stem as a .wlc instead of audio"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite existing stems"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="files separated in parallel (one process each)"),
    threads: int = typer.Option(os.cpu_count() or 1, "--threads", "-t", help="threads for one file"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Separate music into drums, bass, other and vocals with a shipped latent separator.

    From a .wlc the mixture is never decoded: the separator works on the latents
    the file holds. Audio inputs are coded in memory first, exactly as `encode` would."""
    from .audio import AUDIO_SUFFIXES, find_audio

    if fmt.lstrip(".").lower() == "wlc":
        raise UsageError("--format wlc: use --wlc")
    inputs = find_audio(paths, set(AUDIO_SUFFIXES) | {".wlc"})
    if not inputs:
        raise WallocError("no input files found")
    if "-" in inputs:
        raise UsageError("separate reads files, not stdin")
    names = [Path(p).name.rsplit(".", 1)[0] for p in inputs]
    if len(set(names)) != len(names):
        raise WallocError("two inputs have the same name and would write the same stem folder; use separate runs")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WallocError(f"cannot create {out_dir}: {exc.strerror}") from None
    pairs = [(p, out_dir) for p in inputs]
    for src, _, st in _run_many(pairs, _separate_one, (separator, fmt, wlc, force), jobs, threads, "separating",
                                quiet):
        if not quiet:
            folder = os.path.dirname(st.outputs[0])
            err.print(f"{src} -> {folder}/: {st.seconds_audio:.2f} s, "
                      f"{st.seconds_audio / max(st.seconds, 1e-9):.0f}x real time", highlight=False)


class _Counting:
    """A read-only stream that counts the bytes read through it (the size of a .wlc on stdin)."""

    def __init__(self, f):
        self.f, self.bytes = f, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.bytes += len(data)
        return data


@app.command()
def info(path: str = typer.Argument(..., help="a .wlc file, or - for stdin"),
         as_json: bool = typer.Option(False, "--json", help="print the header and figures as one JSON object")):
    """Show a .wlc file's header, duration, bitrate and model."""
    import dataclasses
    import json

    from .bitstream import BitstreamReader
    from .errors import BitstreamError

    try:
        f = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        raise BitstreamError(f"cannot open {path}: {exc.strerror}") from None
    counted = _Counting(f)
    try:
        r = BitstreamReader(counted)
        packets = sum(1 for _ in r)
    finally:
        if path != "-":
            f.close()
    h = r.header
    size = counted.bytes
    dur = r.num_samples / h.sample_rate
    kbps, bits_per_latent = 8 * size / max(dur, 1e-9) / 1000, 8 * size / max(r.total_frames * h.latent_dim, 1)
    if as_json:
        record = {"file": path, "header": dataclasses.asdict(h), "samples": r.num_samples, "seconds": dur,
                  "packets": packets, "frames": r.total_frames, "bytes": size, "kbps": kbps,
                  "bits_per_latent": bits_per_latent}
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
        return
    t = Table(show_header=False, box=None)
    for k, v in [("file", path), ("model", f"{h.model} (sha256 {h.model_sha256[:16]}...)"),
                 ("duration", f"{dur:.3f} s ({r.num_samples} samples at {h.sample_rate} Hz)"),
                 ("source", f"{h.source_sample_rate} Hz, {h.source_channels} ch, mode {h.channel_mode}"),
                 ("codec", f"J={h.J}, {h.latent_dim} latents, {h.channels} ch"),
                 ("bitstream", f"version {h.version}, " + (f"adaptive step, {h.bands} band scales per packet"
                                                           if h.version == 2 else f"fixed step x{h.step_scale:g}")
                                + (f", noise fill {h.fill['edges_hz'][0] / 1000:g}-{h.fill['edges_hz'][-1] / 1000:g} kHz "
                                   f"every {h.fill['block']} frames{', mid/side' if 'channels' in h.fill else ''}" if h.fill else "")),
                 ("packets", f"{packets} x up to {h.frames_per_packet} frames ({r.total_frames} frames)"),
                 ("size", f"{size} bytes, {kbps:.2f} kbps"),
                 ("bits/latent", f"{bits_per_latent:.3f}"),
                 ("encoder", h.encoder_version)]:
        t.add_row(f"[bold]{k}[/bold]", v)
    out.print(t)


@app.command()
def models():
    """List installed models: dimension reduction, latency, size, measured rate and quality."""
    from .pretrained import DEFAULT_MODEL, list_models

    t = Table(title="installed models", caption="kbps, SNR, PSNR, ViSQOL: held-out music coded as `encode` writes "
                                                "files (default bitstream, quality and noise fill), real packets "
                                                "(recipes/codec/measure_models.py)")
    t.add_column("name", no_wrap=True)
    for col in ("J", "latents", "DR", "latency", "params", "weights", "kbps", "SNR", "PSNR (paper)", "ViSQOL",
                "kind"):
        t.add_column(col)
    for m in list_models():
        c, v = m["config"], m.get("validation", {})
        name = m["name"] + (" (default)" if m["name"] == DEFAULT_MODEL else "")
        t.add_row(name, str(c["J"]), str(c["latent_dim"]), f"{m['dimension_reduction']:.2f}",
                  f"{m['latency_ms']:.1f} ms", f"{m['parameters']:,}", f"{m['weights_bytes'] / 1e6:.2f} MB",
                  f"{v.get('kbps', float('nan')):.1f}", f"{v.get('snr_db', float('nan')):.1f} dB",
                  f"{v.get('psnr_paper_db', float('nan')):.1f} dB",
                  "-" if v.get("visqol") is None else f"{v['visqol']:.2f}",
                  m.get("kind", "?"))
    _print_table(t)
    from .pretrained import list_separators

    seps = list_separators()
    if seps:
        t = Table(title="installed separators (walloc-audio separate)",
                  caption="test SDR: museval, local MUSDB-style set (not comparable to MUSDB18); docs/separation.md")
        for col in ("name", "codec", "test SDR", "trained", "weights"):
            t.add_column(col, no_wrap=col == "name")
        for sp in seps:
            e = sp["extra"]
            test = e.get("test") if isinstance(e.get("test"), dict) else {}
            test = test.get("avg") if isinstance(test.get("avg"), dict) else {}
            test = test.get("SDR") if _number(test.get("SDR"), positive=False) else None
            tr, at = e.get("training"), e.get("weights_at")
            tr, at = (tr if isinstance(tr, dict) else {}), (at if isinstance(at, dict) else {})
            if _number(at.get("total_train_seconds")):  # the exported weights' own training, earlier runs included
                tr = {"train_seconds": at["total_train_seconds"], "steps": at.get("total_steps")}
            steps = tr.get("steps") if _number(tr.get("steps")) else "?"
            trained = f"{tr['train_seconds'] / 60:.0f} min, {steps} steps" if _number(tr.get("train_seconds")) else "-"
            t.add_row(sp["name"], str(sp["codec"]), "-" if test is None else f"{test:.2f} dB", trained,
                      f"{sp['bytes'] / 1e6:.2f} MB")
        _print_table(t)


def _number(x, positive: bool = True) -> bool:
    """A finite number (above zero unless ``positive=False``) in a file's JSON metadata."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return ok and (x > 0 or not positive)


@app.command("eval")
def evaluate(
    paths: List[str] = typer.Argument(..., help="audio files and/or folders (searched recursively)"),
    models: Optional[str] = typer.Option(None, "--models", help="comma-separated model names (default: all installed)"),
    qualities: str = typer.Option("5", "--qualities", help="version-2 qualities, e.g. 3,5,7 (0..10)"),
    bitrates: str = typer.Option("", "--bitrates", help="version-2 target bitrates, e.g. 16,32 (rate accuracy)"),
    step_scales: str = typer.Option("", "--step-scales",
                                    help="also version-1 points (fixed step) at these multipliers, e.g. 1,2"),
    gains: str = typer.Option("0", "--gains", help="input gains in dB for a level sweep, e.g. 0,-10,-20,-30,-40"),
    opus_kbps: str = typer.Option("12,16,24,32,48,64", "--opus-kbps", help="Opus baseline bitrates"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="use only the first S seconds of each track"),
    out_dir: Path = typer.Option(Path("eval-out"), "--out", "-o",
                                 help="folder for results.{json,md}, rd.png, spectrogram.png"),
    opus: bool = typer.Option(True, "--opus/--no-opus", help="measure the Opus baseline (needs ffmpeg with libopus)"),
    reference: bool = typer.Option(True, "--reference/--no-reference",
                                   help="measure the reference WaLLoC scheme (8-bit compander + lossless WebP)"),
    reference_sigmas: str = typer.Option("0.25,0.5,1,2", "--reference-sigmas",
                                         help="the reference scheme's compander spreads (its rate points)"),
    fill: bool = typer.Option(True, "--fill/--no-fill", help="code the models' files with the noise fill"),
    spectrogram_model: Optional[str] = typer.Option(None, "--spectrogram-model", help="model shown in spectrogram.png"),
    visqol: bool = typer.Option(False, "--visqol/--no-visqol",
                                help="also score ViSQOL v3 (audio mode; ~1 CPU-s per second of excerpt)"),
    visqol_seconds: float = typer.Option(10.0, "--visqol-seconds", help="ViSQOL excerpt from the middle of each track"),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", "-j", help="worker processes for ViSQOL"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines"),
):
    """Rate and quality of models on your music (real .wlc files), next to Opus and FLAC."""
    from rich import box

    from walloc_audio.tools.evaluation.report import TERMINAL_KEYS, summary_line, table_rows

    from walloc_audio.tools.evaluation.run import evaluate_paths, parse_numbers

    if seconds is not None and not seconds > 0:
        raise WallocError("--seconds must be > 0")
    names = [n.strip() for n in models.split(",") if n.strip()] if models else None
    scales = parse_numbers(step_scales, "--step-scales", 0.125, 8.0) if step_scales.strip() else []
    quals = parse_numbers(qualities, "--qualities", 0.0, 10.0) if qualities.strip() else []
    rates = parse_numbers(bitrates, "--bitrates", 1.0, 1000.0) if bitrates.strip() else []
    levels = parse_numbers(gains, "--gains", -90.0, 0.0)
    kbps = parse_numbers(opus_kbps, "--opus-kbps", 6.0, 510.0) if opus else []
    sigmas = parse_numbers(reference_sigmas, "--reference-sigmas", 0.01, 100.0) if reference else []
    log = None if quiet else (lambda line: err.print(line, highlight=False, markup=False))
    if visqol and not (1.0 <= visqol_seconds <= 600.0):
        raise UsageError("--visqol-seconds must be 1..600")
    if not 1 <= jobs <= 256:
        raise UsageError("--jobs must be 1..256")
    result = evaluate_paths(paths, names, scales, kbps, seconds, opus, spectrogram_model, out_dir, log,
                            qualities=quals, gains=levels, bitrates=rates,
                            visqol_seconds=visqol_seconds if visqol else None, jobs=jobs, reference_sigmas=sigmas,
                            fill=fill)
    headers, rows = table_rows(result, TERMINAL_KEYS)
    t = Table(title=f"walloc-audio eval: {summary_line(result)}", box=box.SIMPLE_HEAD, padding=(0, 1),
              caption=f"dB except mel (a distance); Δ: vs Opus at the same kbps; ÷ref: kbps over the reference "
                      f"scheme's at the same PSNR-paper; all columns in "
                      f"{result['outputs']['results.md']}")
    for h in headers:
        t.add_column(h, no_wrap=True, justify="left" if h == "point" else "right")
    for row in rows:
        t.add_row(*row)
    _print_table(t)
    for note in result["notes"]:
        err.print(note, highlight=False, markup=False)
    err.print(f"wrote {', '.join(result['outputs'].values())} ({result['wall_seconds']:.0f} s)",
              highlight=False, markup=False)


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="training config (YAML); see recipes/codec/conf/"),
    out_dir: Path = typer.Option(Path("exp/codec"), "--out", "-o", help="run folder (resumed if it has checkpoints)"),
    sets: List[str] = typer.Option([], "--set", help="override a config key: --set max_steps=100"),
    devices: str = typer.Option("auto", help="Lightning devices: auto, 1, 4, 0,1 ..."),
    num_nodes: int = typer.Option(1, help="nodes for DDP"),
    accelerator: str = typer.Option("auto", help="cpu, gpu or auto"),
    export_only: bool = typer.Option(False, help="skip training: export the last checkpoint"),
    install: bool = typer.Option(False, help="also copy the exported model into the first registry folder"),
):
    """Train a codec (PCA init, Lightning), fit its entropy model and export it to the registry."""
    import shutil

    from .pretrained import search_path
    from walloc_audio.tools.training.config import TrainConfig
    from walloc_audio.tools.training.run import run as run_training

    cfg = TrainConfig.load(str(config) if config else None, sets)
    devs = int(devices) if devices.isdigit() else devices
    info = run_training(cfg, out_dir, devs, num_nodes, accelerator, export_only,
                        log=lambda m: err.print(m, highlight=False))
    if info and install:
        dest = search_path()[0]
        for suffix in (".json", ".safetensors"):
            shutil.copy2(out_dir / "export" / f"{cfg.name}{suffix}", dest / f"{cfg.name}{suffix}")
        err.print(f"installed {cfg.name} into {dest}")


@app.command()
def bench(
    models: Optional[str] = typer.Option(None, "--models", "-m", help="comma-separated names (default: all installed)"),
    seconds: float = typer.Option(60.0, help="audio per throughput run (in memory, best of 3)"),
    minutes: float = typer.Option(10.0, help="length of the file encoded/decoded by the CLI for peak memory (0: skip)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the figures to this JSON file"),
    fill: bool = typer.Option(True, "--fill/--no-fill", help="version 2 with the noise fill, as encode writes files"),
):
    """Throughput (1 thread and all threads), algorithmic latency and peak memory of every model."""
    import json

    from walloc_audio.tools.benchmark import bench_models
    from .fsutil import atomic_output
    from .pretrained import list_models

    names = [n.strip() for n in models.split(",") if n.strip()] if models else [m["name"] for m in list_models()]
    if not names:
        raise WallocError("no models to benchmark")
    if not (1.0 <= seconds <= 3600.0) or not (0.0 <= minutes <= 600.0):
        raise WallocError("--seconds must be 1..3600 and --minutes 0..600")
    threads = sorted({1, os.cpu_count() or 1})
    err.print(f"{len(names)} models; throughput on {seconds:g} s of stereo music in memory (M samples/s counts "
              f"both channels; x RT = times real time); peak RSS of the CLI on a {minutes:g}-minute file",
              highlight=False)
    rows = bench_models(names, seconds, minutes, log=lambda r: err.print(f"  {r['model']} done", highlight=False),
                        fill=fill)
    t = Table(title=f"walloc-audio bench ({os.cpu_count()} CPU cores; M samples/s, x real time; "
                    f"noise fill {'on' if fill else 'off'})", box=None)
    cols = ["model", "ms"] + [f"enc {n}t" for n in threads] + [f"dec {n}t" for n in threads]
    if minutes > 0:
        cols += ["peak MB"]
    for c in cols:
        t.add_column(c, no_wrap=True)
    for r in rows:
        cells = [r["model"], f"{r['latency_ms']:.1f}"]
        for verb in ("encode", "decode"):
            cells += [f"{r[f'{verb}_msps_{n}t']:.1f} {r[f'{verb}_x_rt_{n}t']:.0f}x" for n in threads]
        if minutes > 0:
            cells += [f"{r['encode_peak_mb']}/{r['decode_peak_mb']}"]
        t.add_row(*cells)
    (out if out.is_terminal else Console(width=140)).print(t)  # whole figures in logs and pipes too
    if json_out:
        with atomic_output(str(json_out), overwrite=True) as tmp:
            Path(tmp).write_text(json.dumps({"cpu_cores": os.cpu_count(), "seconds": seconds, "minutes": minutes,
                                             "models": rows}, indent=2) + "\n")


def _device(spec: Optional[str]):
    return int(spec) if spec is not None and spec.isdigit() else spec


@app.command()
def stream(
    out: Optional[str] = typer.Option(None, "--out", "-o", help="record the stream to FILE.wlc (- for stdout)"),
    send: Optional[str] = typer.Option(None, "--send", help="send to udp://HOST:PORT or tcp://HOST:PORT"),
    monitor: bool = typer.Option(False, "--monitor", help="decode and play locally"),
    list_devices: bool = typer.Option(False, "--list-devices", help="list audio devices and exit"),
    input_device: Optional[str] = typer.Option(None, "--input-device", help="index or name (default device)"),
    output_device: Optional[str] = typer.Option(None, "--output-device", help="index or name, for --monitor"),
    block_size: int = typer.Option(512, "--block-size", help="device block size in samples"),
    model: Optional[str] = typer.Option(None, "--model", "-m"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="stop after this much audio"),
    frames_per_packet: int = typer.Option(2, "--frames-per-packet", help="latency vs 14-byte packet overhead"),
    quality: Optional[float] = typer.Option(None, "--quality", "-Q", help="constant quality 0..10 (default 5)"),
    bitrate: Optional[float] = typer.Option(None, "--bitrate", "-b",
                                            help="average kbps instead, packet framing included"),
    rate: Optional[int] = typer.Option(None, "--rate", help="device rate (default: the model's; resampled)"),
    channels: int = typer.Option(2, "--channels", help="channels to capture (1 = mono)"),
    force: bool = typer.Option(False, "--force", "-f"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Live: microphone -> encoder -> file, network and/or local monitor, with a live panel."""
    if list_devices:
        from streaming.live import list_devices as devices

        t = Table(title="audio devices")
        for col in ("index", "name", "in", "out", "default rate"):
            t.add_column(col)
        for d in devices():
            t.add_row(str(d["index"]), d["name"], str(d["max_input_channels"]), str(d["max_output_channels"]),
                      f"{d['default_samplerate']:.0f}")
        out_console = Console()
        out_console.print(t)
        return
    from streaming.commands import run_stream

    _check_rate_options(quality, bitrate)
    st = run_stream(model, out, send, monitor, _device(input_device), _device(output_device), block_size, seconds,
                    frames_per_packet, rate, channels, force, quiet, quality, bitrate,
                    warn=lambda w: err.print(f"walloc-audio: {w}", highlight=False, markup=False, soft_wrap=True))
    if not quiet:
        kbps = 8 * st["bytes"] / max(st["seconds"], 1e-9) / 1000
        err.print(f"streamed {st['seconds']:.2f} s in {st['packets']} packets, {kbps:.1f} kbps, algorithmic "
                  f"latency {st['latency_ms']:.1f} ms, xruns {st['xruns']}"
                  + (" (interrupted, stream finished cleanly)" if st["interrupted"] else ""), highlight=False)


@app.command()
def listen(
    url: str = typer.Argument(..., help="udp://:PORT, tcp://:PORT (bind 127.0.0.1 unless a host is given), FILE or -"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="also write the audio to FILE (.wav, .flac, ...)"),
    play: bool = typer.Option(True, "--play/--no-play", help="play to the output device"),
    output_device: Optional[str] = typer.Option(None, "--output-device"),
    block_size: int = typer.Option(512, "--block-size"),
    jitter: int = typer.Option(4, "--jitter-packets", help="packets of reordering tolerated before a loss"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="give up after this many seconds of silence"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="stop after this much audio"),
    force: bool = typer.Option(False, "--force", "-f"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Live: receive a stream, decode it (concealing lost packets) and play and/or record it."""
    from streaming.commands import run_listen

    st = run_listen(url, out, play, _device(output_device), block_size, jitter, timeout, force, quiet, seconds)
    if not quiet:
        err.print(f"received {st['packets']} packets, {st['lost']} lost ({st['concealed_frames']} frames concealed), "
                  f"{st['samples']} samples" + ("" if st["ended"] else " (no end packet)"), highlight=False)


def _click_errors() -> tuple[type, type, type | None, type]:
    """(ClickException, UsageError, NoArgsIsHelpError, Abort) of the click typer runs on (it may vendor its own)."""
    import importlib

    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            m = importlib.import_module(name)
        except ImportError:
            continue
        abort = getattr(m, "Abort", None) or getattr(typer, "Abort", None) or KeyboardInterrupt
        return m.ClickException, m.UsageError, getattr(m, "NoArgsIsHelpError", None), abort
    raise ImportError("neither typer's click nor click is importable")


def _usage_error(exc) -> int:
    """One line, a hint where to look, exit 2 (what opusenc and ffmpeg do)."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "walloc-audio"
    err.print(f"walloc-audio: error: {exc.format_message()}", highlight=False, markup=False, soft_wrap=True)
    err.print(f"usage: see `{where} --help`", highlight=False, markup=False)
    return 2


def run(argv: Optional[List[str]] = None) -> int:
    """Run the CLI and return its exit code (user errors become one line on stderr)."""
    try:
        code = app(args=argv, standalone_mode=False)
        if code == 130:  # typer turns KeyboardInterrupt into a return code here
            raise KeyboardInterrupt
        return code if isinstance(code, int) else 0
    except WallocError as exc:
        err.print(f"walloc-audio: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        if isinstance(exc, UsageError):
            err.print("usage: see `walloc-audio --help`", highlight=False, markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("walloc-audio: interrupted (no partial output was left)", markup=False)
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TORCH_MODULES:
            raise
        words = [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")]
        separating = bool(words) and words[0] == "separate"  # its extra brings torch as well
        extra = "separation" if separating or exc.name.split(".")[0] in ("asteroid", "musdb", "museval", "openunmix") \
            else "train"
        err.print(f"walloc-audio: error: this command needs {exc.name}, which the lean install leaves out: "
                  f"pip install 'walloc-audio[{extra}]'", highlight=False, markup=False, soft_wrap=True)
        return 1
    except Exception as exc:
        click_exception, usage_error, no_args, abort = _click_errors()
        if no_args is not None and isinstance(exc, no_args):  # bare command: its help, as a usage error
            exc.show()
            return 2
        if isinstance(exc, usage_error):
            return _usage_error(exc)
        if isinstance(exc, click_exception):
            err.print(f"walloc-audio: error: {exc.format_message()}", highlight=False, markup=False, soft_wrap=True)
            return exc.exit_code
        if isinstance(exc, abort):
            return 130
        raise


def main() -> None:
    """Console entry point.

    Exits with ``os._exit`` once everything is flushed: every output is already
    closed and renamed by then, and skipping the interpreter's teardown (of torch
    above all, where a command loaded it) saves time and peak memory.
    """
    code = run()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
