#!/usr/bin/env bash
# A private PulseAudio daemon for the live-audio tests (DESIGN.md §5), usable as root in a
# container with no sound card:
#   - sink   `nullsink` (module-null-sink, 44.1 kHz): plays into nothing; its monitor source
#            `nullsink.monitor` records what was played, so output can be looped back to input;
#   - source `sine`     (module-sine-source, 440 Hz, 44.1 kHz): the default source.
#
#   eval "$(bash tests/pulse.sh start)"   # starts it, prints `export ...` lines for this shell
#   bash tests/pulse.sh stop              # kills it (by PID file) and removes its runtime dir
#
# The daemon lives in its own XDG_RUNTIME_DIR (a fresh temp dir), so it never touches a desktop
# session's PulseAudio; `stop` only acts on a directory this script created (marker file).
# Diagnostics go to stderr and to $XDG_RUNTIME_DIR/pulse.log; `start` exits non-zero with the
# reason when the daemon cannot start.
set -euo pipefail

MARKER=.walloc-test-pulse

die() { echo "pulse.sh: $*" >&2; exit 1; }

start() {
    command -v pulseaudio >/dev/null || die "pulseaudio not installed (apt-get install pulseaudio pulseaudio-utils)"
    command -v pactl >/dev/null || die "pactl not installed (apt-get install pulseaudio-utils)"
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/walloc-pulse.XXXXXX")
    chmod 700 "$dir"
    touch "$dir/$MARKER"
    export XDG_RUNTIME_DIR="$dir"
    export PULSE_SERVER="unix:$dir/pulse/native"  # talk to this daemon even if the caller had another
    # -n: no default.pa (no hardware probing); user mode even as root; never exit on idle.
    if ! pulseaudio -D -n --exit-idle-time=-1 --system=false --disallow-exit \
        --log-target="file:$dir/pulse.log" --load=module-native-protocol-unix \
        --load="module-null-sink sink_name=nullsink rate=44100" \
        --load="module-sine-source source_name=sine rate=44100 frequency=440" >&2; then
        tail -n 5 "$dir/pulse.log" >&2 2>/dev/null || true
        rm -rf "$dir"
        die "pulseaudio failed to start (log above)"
    fi
    # -D returns once the daemon forked; wait until it answers (at most ~5 s).
    local i
    for i in $(seq 50); do
        pactl info >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! pactl info >/dev/null 2>&1; then
        tail -n 5 "$dir/pulse.log" >&2 2>/dev/null || true
        stop_dir "$dir"
        die "pulseaudio started but does not answer on $dir/pulse/native"
    fi
    pactl set-default-source sine
    pactl set-default-sink nullsink
    echo "export XDG_RUNTIME_DIR=$dir"
    echo "export PULSE_SERVER=$PULSE_SERVER"
}

stop_dir() {
    local dir=$1 pid i
    [ -f "$dir/$MARKER" ] || die "$dir was not made by tests/pulse.sh start; not touching it"
    if [ -f "$dir/pulse/pid" ]; then
        pid=$(cat "$dir/pulse/pid")
        kill "$pid" 2>/dev/null || true
        for i in $(seq 50); do  # give it up to ~5 s to exit, then insist
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop)
        [ -n "${XDG_RUNTIME_DIR:-}" ] || die "XDG_RUNTIME_DIR is not set: nothing to stop"
        stop_dir "$XDG_RUNTIME_DIR" ;;
    *) die "usage: tests/pulse.sh start|stop" ;;
esac
