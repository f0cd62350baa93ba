"""A live status panel for streaming sessions, drawn with rich on stderr.

The panel is passive: the worker loop calls :meth:`LivePanel.update` with whatever it knows
(levels, bitrate, packet counts, xruns...), as often as it likes. The panel remembers the
fields and redraws at most ``max_hz`` times per second, so updating on every block costs a dict
update, not a terminal write. Stdout stays free for audio or packets on a pipe.

It also measures two things itself:

- elapsed wall time since the panel started;
- CPU use of this process, ``Δ process_time / Δ wall time`` between two redraws. It is a share
  of *one* core (all threads summed), so a multi-threaded process can read above 100 %.

On a non-interactive stderr (a pipe, CI logs) or with ``disable=True`` nothing is drawn, and
:meth:`update` only stores the fields; :meth:`render` still builds the table (tests use it).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

METER_FLOOR_DB = -60.0
METER_WIDTH = 30

# Fields with a dedicated row; anything else passed to update() is listed after them as-is.
KNOWN_FIELDS = ("in_db", "out_db", "kbps", "algo_ms", "buffer_ms", "sent", "received", "lost", "concealed", "xruns")


def meter(db: float | None, width: int = METER_WIDTH) -> Text:
    """A level bar for ``db`` dBFS on a ``METER_FLOOR_DB``..0 scale, coloured like a mixer's."""
    if db is None:
        return Text("─" * width + "    -- dB", style="dim")
    # Linear in dB: -60 dB is empty, 0 dB is full; clamp outside the scale.
    fraction = min(1.0, max(0.0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB))
    filled = round(fraction * width)
    style = "red" if db >= -3.0 else "yellow" if db >= -12.0 else "green"
    text = Text("█" * filled, style=style)
    text.append("─" * (width - filled), style="dim")
    text.append(f" {max(db, -99.9):6.1f} dB")
    return text


def _format(value) -> str:
    if isinstance(value, dict):
        return "  ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


class LivePanel:
    """Status panel: input/output meters, kbps, latency, packets, xruns, CPU and elapsed time.

    Args:
        title: shown above the table.
        disable: True draws nothing; None (default) draws only when stderr is a terminal.
        max_hz: redraw limit (at most 10 per second by default).
        console: a rich Console to draw on (default: stderr).

    Use as a context manager::

        with LivePanel("walloc-audio live") as panel:
            while running:
                ...
                panel.update(in_db=mic.level_db, kbps=8 * bytes_sent / elapsed / 1000,
                             xruns=mic.stats | speaker.stats)

    Known fields: ``in_db``, ``out_db`` (peak dBFS), ``kbps``, ``algo_ms`` (algorithmic latency)
    and ``buffer_ms`` (buffering latency), ``sent``, ``received``, ``lost``, ``concealed``
    (packets), ``xruns`` (an int or a dict of counters). Other keywords are shown as extra rows.
    """

    def __init__(self, title: str = "walloc-audio", disable: bool | None = None, max_hz: float = 10.0,
                 console: Console | None = None):
        self.title = title
        self.console = console or Console(file=sys.stderr)
        self.disabled = (not self.console.is_terminal) if disable is None else bool(disable)
        self.min_interval = 1.0 / max_hz
        self.fields: dict = {}
        self._live: Live | None = None
        self._start_wall = time.monotonic()
        self._last_draw = float("-inf")
        self._cpu_mark = (time.monotonic(), time.process_time())
        self.cpu_percent: float | None = None

    def __enter__(self) -> "LivePanel":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Reset the clocks and, unless disabled, start drawing."""
        self._start_wall = time.monotonic()
        self._cpu_mark = (self._start_wall, time.process_time())
        if not self.disabled and self._live is None:
            self._live = Live(get_renderable=self.render, console=self.console, auto_refresh=False,
                              transient=False, redirect_stdout=False, redirect_stderr=False)
            self._live.start(refresh=True)
            self._last_draw = time.monotonic()

    def stop(self) -> None:
        """Draw the final state once and stop (the last table stays on screen)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()  # stop() redraws once more

    def update(self, **fields) -> None:
        """Merge ``fields`` into the panel; redraw if the last redraw is older than 1/max_hz."""
        self.fields.update(fields)
        if self._live is None:
            return
        now = time.monotonic()
        if now - self._last_draw >= self.min_interval:
            self._last_draw = now
            self._live.refresh()

    def _sample_cpu(self) -> float | None:
        wall, cpu = time.monotonic(), time.process_time()
        dwall = wall - self._cpu_mark[0]
        if dwall >= 0.2:  # shorter windows are too noisy to show
            self.cpu_percent = 100.0 * (cpu - self._cpu_mark[1]) / dwall
            self._cpu_mark = (wall, cpu)
        return self.cpu_percent

    def render(self) -> Group:
        """The panel as a rich renderable (a title and a two-column table)."""
        f = self.fields
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_row("input", meter(f.get("in_db")))
        table.add_row("output", meter(f.get("out_db")))
        if "kbps" in f:
            table.add_row("bitrate", f"{f['kbps']:.1f} kbps")
        if "algo_ms" in f or "buffer_ms" in f:
            algo, buf = f.get("algo_ms", 0.0), f.get("buffer_ms", 0.0)
            table.add_row("latency", f"{algo + buf:.1f} ms  (algorithmic {algo:.1f} + buffers {buf:.1f})")
        packets = [f"{k} {f[k]}" for k in ("sent", "received", "lost", "concealed") if k in f]
        if packets:
            table.add_row("packets", "  ".join(packets))
        if "xruns" in f:
            table.add_row("xruns", _format(f["xruns"]))
        for key, value in f.items():
            if key not in KNOWN_FIELDS:
                table.add_row(key, _format(value))
        cpu = self._sample_cpu()
        table.add_row("cpu", "--" if cpu is None else f"{cpu:.0f} %")
        elapsed = time.monotonic() - self._start_wall
        table.add_row("elapsed", f"{int(elapsed // 60):02d}:{elapsed % 60:04.1f}")
        return Group(Text(self.title, style="bold"), table)
