"""``litegate ops export DIR``: the Grafana dashboard, the Prometheus alert rules and a
scrape example, as shipped in the package (the files the tests run through promtool)."""

from __future__ import annotations

import argparse
from importlib.resources import files
from pathlib import Path

import yaml

from litegate.faults import OperationalFault
from litegate.settings import Settings

SHIPPED = ("grafana-dashboard.json", "alerts.yml")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("ops", help="monitoring kit: Grafana dashboard, alert rules, scrape config")
    s = p.add_subparsers(dest="ops_command", required=True)
    e = s.add_parser("export", help="write grafana-dashboard.json, alerts.yml and prometheus.yml")
    e.add_argument("dir", type=Path)
    e.add_argument("--target", action="append", metavar="HOST:PORT",
                   help="gateway address to scrape (repeatable; default 127.0.0.1:8000)")
    e.set_defaults(func=_export)


def scrape_config(targets: list[str]) -> str:
    doc = yaml.safe_load(files("litegate.ops").joinpath("prometheus.yml").read_text())
    doc["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
    return str(yaml.safe_dump(doc, sort_keys=False))


def _export(args: argparse.Namespace, settings: Settings) -> int:
    targets = args.target or ["127.0.0.1:8000"]
    for t in targets:
        host, sep, port = t.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--target: expected HOST:PORT, got {t!r}")
    out: Path = args.dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED:
            (out / name).write_bytes(files("litegate.ops").joinpath(name).read_bytes())
        (out / "prometheus.yml").write_text(scrape_config(targets))
    except OSError as exc:
        raise OperationalFault(f"cannot write to {out}: {exc.strerror}; choose a writable "
                               "directory") from exc
    for name in (*SHIPPED, "prometheus.yml"):
        print(out / name)
    return 0
