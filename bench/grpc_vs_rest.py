"""gRPC vs REST v2 inference through one ``litegate serve --grpc-port``, side by side.

One command, one run::

    .venv/bin/python bench/grpc_vs_rest.py                  # prints the table
    .venv/bin/python bench/grpc_vs_rest.py --write          # ... and appends it to bench/RESULTS.md

The server: ``litegate serve --port P --grpc-port G`` (uvloop; auth, limits, metrics, access
log on) with the model of ``litegate models example mlp`` (x FP32 [-1, 256] -> y [-1, 16])
registered with ``--max-batch 64 --max-queue-delay-ms 2`` and one API key (no limits).
The clients: the official asyncio clients, ``tritonclient.http.aio`` (binary tensors, its
default) and ``tritonclient.grpc.aio`` (``raw_input_contents``), ``--concurrency`` tasks
(1, 16, 64) in this process, ``--rows`` rows per request (1 and 64). Every cell runs
``--seconds`` in each of ``--rounds`` interleaved rounds (which protocol goes first
rotates) and the median is reported: the machine is shared. Rows/s, p50/p99 and the
gateway's own CPU per request (``/proc/<pid>/stat``) for each protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"
LITEGATE = str(Path(sys.executable).parent / "litegate")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cli(home: Path, *argv: str) -> str:
    out = subprocess.run([LITEGATE, "--home", str(home), *argv], capture_output=True,
                         text=True, check=True)
    return out.stdout


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_cell(protocol: str, url: str, key: str, rows: int, concurrency: int,
                   seconds: float) -> list[float]:
    """Latencies of the requests completed in ``seconds`` by ``concurrency`` tasks."""
    if protocol == "grpc":
        import tritonclient.grpc.aio as triton

        client = triton.InferenceServerClient(url)
        headers = {"authorization": f"Bearer {key}"}
    else:
        import tritonclient.http.aio as triton  # type: ignore[no-redef]

        client = triton.InferenceServerClient(url, conn_limit=concurrency)
        headers = {"Authorization": f"Bearer {key}"}
    x = np.random.default_rng(0).standard_normal((rows, 256)).astype(np.float32)
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            inp = triton.InferInput("x", [rows, 256], "FP32")
            inp.set_data_from_numpy(x)
            t0 = time.perf_counter()
            result = await client.infer("mlp", [inp], headers=headers)
            assert result.as_numpy("y").shape == (rows, 16)
            latencies.append(time.perf_counter() - t0)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return latencies


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"litegate serve exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1)
            return
        except OSError:
            if time.time() > deadline:
                raise SystemExit("litegate serve did not start") from None
            time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--rows", default="1,64")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    args = ap.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]

    with tempfile.TemporaryDirectory(prefix="lg-grpc-bench-") as tmp:
        home = Path(tmp) / "home"
        model = Path(tmp) / "mlp.onnx"
        cli(home, "models", "example", "mlp", str(model))
        cli(home, "models", "add", "mlp", str(model), "--max-batch", "64",
            "--max-queue-delay-ms", "2", "--hot")
        key = json.loads(cli(home, "keys", "create", "--name", "bench", "--json"))["key"]
        port, grpc_port = free_port(), free_port()
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [LITEGATE, "--home", str(home), "serve", "--port", str(port),
             "--grpc-port", str(grpc_port)],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(port, proc)
            urls = {"rest": f"{HOST}:{port}", "grpc": f"{HOST}:{grpc_port}"}
            # Warm both paths (model load, connection setup).
            for protocol, url in urls.items():
                asyncio.run(run_cell(protocol, url, key, 1, 1, 0.5))
            cells: dict[tuple[str, int, int], list[tuple[float, float, float, float]]] = {}
            order = ["rest", "grpc"]
            for rnd in range(args.rounds):
                for rows in row_counts:
                    for c in concurrencies:
                        for protocol in order if rnd % 2 == 0 else order[::-1]:
                            cpu0 = cpu_seconds(proc.pid)
                            t0 = time.perf_counter()
                            lat = asyncio.run(run_cell(protocol, urls[protocol], key, rows, c,
                                                       args.seconds))
                            wall = time.perf_counter() - t0
                            cpu = cpu_seconds(proc.pid) - cpu0
                            lat.sort()
                            cells.setdefault((protocol, rows, c), []).append((
                                len(lat) * rows / wall, lat[len(lat) // 2] * 1e3,
                                lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
                                cpu / max(len(lat), 1) * 1e6))
                            print(f"round {rnd + 1} rows={rows} c={c} {protocol}: "
                                  f"{len(lat) * rows / wall:.0f} rows/s", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()

    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## gRPC vs REST v2 inference (issue 10, item 2) — {stamp}",
        "",
        (f"`.venv/bin/python bench/grpc_vs_rest.py --rounds {args.rounds} --seconds "
         f"{args.seconds:g}` — one `litegate serve --grpc-port` (model `mlp`: x FP32 "
         "[-1, 256] -> y [-1, 16], `--max-batch 64 --max-queue-delay-ms 2`), the official "
         "asyncio clients (`tritonclient.http.aio` binary tensors, `tritonclient.grpc.aio`) "
         f"in one process; medians of {args.rounds} interleaved rounds; {os.cpu_count()} "
         f"CPUs, load average after: {load}"),
        "",
        ("| rows/request | concurrency | REST rows/s | gRPC rows/s | gRPC / REST "
         "| REST p50 / p99 ms | gRPC p50 / p99 ms | gateway CPU µs/request REST / gRPC |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for rows in row_counts:
        for c in concurrencies:
            med = {p: [statistics.median(v[i] for v in cells[(p, rows, c)]) for i in range(4)]
                   for p in ("rest", "grpc")}
            r, g = med["rest"], med["grpc"]
            lines.append(
                f"| {rows} | {c} | {r[0]:.0f} | {g[0]:.0f} | **{g[0] / r[0]:.2f}×** | "
                f"{r[1]:.2f} / {r[2]:.2f} | {g[1]:.2f} / {g[2]:.2f} | {r[3]:.0f} / {g[3]:.0f} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.write:
        with RESULTS.open("a") as fh:
            fh.write("\n" + table)


if __name__ == "__main__":
    main()
