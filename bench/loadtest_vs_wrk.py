"""Does ``litegate loadtest`` (aiohttp, one process) keep up with the gateway? Drive the
same ``litegate serve`` (route ``chat`` -> ``bench/mock_upstream.py``) with ``wrk`` and with
``litegate loadtest`` in interleaved rounds, same connections and duration, and compare
RPS, latency and the CPU each load generator and the gateway used.

Run: ``.venv/bin/python bench/loadtest_vs_wrk.py [--connections 64] [--seconds 5] [--rounds 3]``
(needs ``wrk`` on PATH). Prints a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(run: callable, gateway_pid: int) -> tuple[dict, float, float, float]:
    """(result, generator CPU s, gateway CPU s, wall s) of one round."""
    c0, g0, t0 = children_cpu_s(), proxy.tree_cpu_s(gateway_pid), time.perf_counter()
    result = run()
    return (result, children_cpu_s() - c0, proxy.tree_cpu_s(gateway_pid) - g0,
            time.perf_counter() - t0)


def run_loadtest(port: int, key: str, connections: int, seconds: float) -> dict:
    argv = [*proxy.litegate_cmd(), "loadtest", "--url", f"http://{proxy.HOST}:{port}",
            "--key", key, "--route", proxy.ROUTE, "--connections", str(connections),
            "--duration", str(seconds), "--prompt", "Say hello in five words.", "--json"]
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"litegate loadtest failed: {out.stderr[-500:]}")
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    procs = proxy.Procs()
    workdir = Path(tempfile.mkdtemp(prefix="lt-vs-wrk-"))
    rows: dict[str, list[tuple[float, float, float, float, float]]] = {"wrk": [], "loadtest": []}
    try:
        mock_port, port = proxy.free_port(), proxy.free_port()
        procs.spawn([sys.executable, str(proxy.BENCH / "mock_upstream.py"), "--host", proxy.HOST,
                     "--port", str(mock_port)], workdir / "mock.log", cwd=workdir)
        target = proxy.setup_litegate(workdir, mock_port, port)
        res = proxy.Result(name="litegate", label=target.label)
        gw = proxy.start_target(procs, target, argparse.Namespace(settle=0.5), workdir, res)
        proxy.run_wrk(port, target.auth_key, 3, args.connections, 2, workdir, "warmup")
        for i in range(args.rounds):
            w, cpu, gcpu, wall = measured(lambda i=i: proxy.run_wrk(
                port, target.auth_key, args.seconds, args.connections, 2, workdir, f"r{i}"), gw.pid)
            rows["wrk"].append((w["rps"], w["p50"], w["p99"], cpu / wall, gcpu / wall))
            lt, cpu, gcpu, wall = measured(lambda: run_loadtest(
                port, target.auth_key, args.connections, args.seconds), gw.pid)
            lat = lt["latency_ms"]
            rows["loadtest"].append((lt["rps"], lat["p50"], lat["p99"], cpu / wall, gcpu / wall))
            if lt["errors"] or w["non2xx"]:
                raise RuntimeError(f"errors: loadtest {lt['errors']}, wrk non-2xx {w['non2xx']}")
    finally:
        procs.stop_all()
    print(f"`{' '.join(sys.argv)}` — {args.rounds} interleaved rounds of {args.seconds:g} s, "
          f"{args.connections} connections, wrk -t2; load average after: {proxy.loadavg()}\n")
    print("| generator | RPS per round | median RPS | p50 ms | p99 ms | generator CPU (cores) "
          "| generator CPU µs/request | gateway CPU (cores) |\n|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {', '.join(f'{x[0]:.0f}' for x in r)} | "
              f"{statistics.median(x[0] for x in r):.0f} | {statistics.median(x[1] for x in r):.2f} | "
              f"{max(x[2] for x in r):.2f} | {statistics.median(x[3] for x in r):.2f} | "
              f"{statistics.median(x[3] / x[0] * 1e6 for x in r):.0f} | "
              f"{statistics.median(x[4] for x in r):.2f} |")
    ratio = statistics.median(x[0] for x in rows["loadtest"]) / statistics.median(
        x[0] for x in rows["wrk"])
    print(f"\nloadtest / wrk median RPS = **{ratio:.2f}×**")
    return 0


if __name__ == "__main__":
    sys.exit(main())
