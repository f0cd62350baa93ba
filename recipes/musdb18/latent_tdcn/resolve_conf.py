#!/usr/bin/env python3
"""Write the resolved config (conf.yml + --set overrides + data root) into the experiment folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def set_path(conf: dict, dotted: str, value: str) -> None:
    keys = dotted.split(".")
    node = conf
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = yaml.safe_load(value)  # "30" -> 30, "[a, b]" -> list, "null" -> None


def apply_sets(conf: dict, items: list[str]) -> dict:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML values) to ``conf`` in place; returns it."""
    for item in items:
        key, _, value = item.partition("=")
        set_path(conf, key, value)
    return conf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--conf", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--root", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    conf = apply_sets(yaml.safe_load(args.conf.read_text()), args.set)
    if args.root:
        conf["data"]["root"] = str(Path(args.root).resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(conf, sort_keys=False))
    print(args.out)


if __name__ == "__main__":
    main()
