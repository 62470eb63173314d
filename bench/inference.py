"""ONNX inference benchmark: litegate's /v2 infer side by side with its peers.

One command, one run::

    .venv/bin/python bench/inference.py                 # prints the table
    .venv/bin/python bench/inference.py --write         # ... and appends it to bench/RESULTS.md
    .venv/bin/python bench/inference.py --providers cuda --write   # bench/gpu.sh does this

Model: an MLP built by this script with ``onnx.helper`` (input 256, ``--layers`` (3) hidden
layers ``--hidden`` (4096) wide with ReLU, output 16, FP32, dynamic batch, ~200 MB of
weights), so compute matters: on 2 CPU cores one row costs ~4 ms unbatched and ~0.75 ms
per row in a batch of 64, far above the ~0.2-0.5 ms an HTTP request costs. (With 1024-wide
layers a row costs ~0.1 ms and every HTTP server, batched or not, measures its HTTP stack.)

Targets (one at a time, all on 127.0.0.1; every HTTP target gets the same load from
``wrk`` with the same v2 JSON request bodies, 1 row per request):

a. ``raw``          in-process ``session.run`` at batch sizes 1..128; the best rows/s is
                    the ceiling (no HTTP at all);
b. ``litegate``     ``litegate serve`` (auth, limits, metrics on) -> ``POST
                    /v2/models/mlp/infer`` with dynamic batching (``--max-batch`` 64,
                    ``--delay-ms`` 2);
c. ``litegate-nb``  the same server, model ``mlp_nobatch`` registered with ``--max-batch 1``;
d. ``handwritten``  what users write otherwise: a minimal Litestar app under the same
                    uvicorn (uvloop + httptools) whose sync handler (thread pool) parses
                    the JSON and calls ``session.run`` per request.

Concurrency 1, 16 and 64 (``wrk -c``). All servers run side by side and the cells are
measured in ``--rounds`` interleaved rounds (who goes first rotates), reporting medians,
because the benchmark machine is shared. Reports rows/s, p50, p99, the providers really in
use, and the ratios the issue sets as targets. Raw output goes to ``bench/.work/``.
``--compare-executors`` also runs the batcher in-process on a thread pool vs a process pool.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
RESULTS = BENCH / "RESULTS.md"
HOST = "127.0.0.1"
IN_DIM, OUT_DIM = 256, 16
HIDDEN = 4096
CONCURRENCY = (1, 16, 64)
LITEGATE = [sys.executable, "-c", "import sys; from litegate.cli import main; sys.exit(main())"]


def log(msg: str) -> None:
    print(f"[bench-inference] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def build_mlp(path: Path, layers: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dims = [IN_DIM] + [HIDDEN] * layers + [OUT_DIM]
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"B{i}")]
        last = i == len(dims) - 2
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"B{i}"], ["y" if last else f"a{i}"])]
        if not last:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
            prev = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN_DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT_DIM])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def providers_for(setting: str) -> list[str]:
    import onnxruntime as ort

    from litegate.inference.providers import select_providers

    return select_providers(setting, ort.get_available_providers(), strict=False)


# ----------------------------------------------------------------------------- (a) raw

def raw_session(model: Path, setting: str, intra: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if intra:
        so.intra_op_num_threads = intra
    return ort.InferenceSession(str(model), so, providers=providers_for(setting))


def raw_cell(session, bs: int, seconds: float, streams: int = 1) -> dict:
    """``streams`` Python threads calling ``session.run`` back to back on one session."""
    import threading

    x = np.random.default_rng(bs).standard_normal((bs, IN_DIM)).astype(np.float32)
    for _ in range(3):
        session.run(None, {"x": x})
    counts, lat = [0] * streams, []
    t0 = time.perf_counter()

    def loop(i: int) -> None:
        while time.perf_counter() - t0 < seconds:
            t = time.perf_counter()
            session.run(None, {"x": x})
            lat.append(time.perf_counter() - t)
            counts[i] += bs

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rows_s": sum(counts) / (time.perf_counter() - t0),
            "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3)}


def raw_ceiling(sessions: dict, bs: int, seconds: float) -> dict:
    """The best of one stream on all cores and two streams with one thread each."""
    cells = {name: raw_cell(sess, bs, seconds, streams) for name, (sess, streams)
             in sessions.items()}
    best = max(cells, key=lambda n: cells[n]["rows_s"])
    return {**cells[best], "config": best}


def best_batch(session, seconds: float) -> int:
    rates = {bs: raw_cell(session, bs, seconds)["rows_s"] for bs in (8, 32, 64, 128)}
    log(f"raw batch sizes: { {k: round(v) for k, v in rates.items()} }")
    return max(rates, key=rates.__getitem__)


# ----------------------------------------------------------------------------- executors

_PROC_SESSION = None


def _proc_init(model: str, threads: int) -> None:
    global _PROC_SESSION
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    _PROC_SESSION = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _proc_run(inputs: dict) -> dict:
    (y,) = _PROC_SESSION.run(None, inputs)
    return {"y": y}


def compare_executors(model: Path, seconds: float, rounds: int = 3, clients: int = 64) -> dict:
    """The batcher on a thread pool vs a process pool, in-process, no HTTP."""
    import asyncio
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from litegate.inference.batcher import AdaptiveBatcher

    async def drive(batcher: AdaptiveBatcher) -> float:
        x = {"x": np.ones((1, IN_DIM), np.float32)}
        stop = time.perf_counter() + seconds
        done = 0

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await batcher.submit(x)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return done / (time.perf_counter() - t0)

    results: dict[str, list[float]] = {}
    configs = [("threads: 1 batch at a time, ORT 2 intra-op threads", "thread", 1, 2),
               ("threads: 2 batches at a time, ORT 1 intra-op thread", "thread", 2, 1),
               ("processes: 2 workers, ORT 1 intra-op thread each", "process", 2, 1)]
    for _ in range(rounds):
        for label, kind, concurrency, intra in configs:
            if kind == "thread":
                _proc_init(str(model), intra)
                executor = ThreadPoolExecutor(max_workers=concurrency)
            else:
                executor = ProcessPoolExecutor(max_workers=concurrency, initializer=_proc_init,
                                               initargs=(str(model), intra))
                list(executor.map(time.sleep, [0.5] * concurrency))  # start, load the model
            for measured in (False, True):  # warm-up, then the measured run
                batcher = AdaptiveBatcher(_proc_run, executor=executor, max_batch_size=64,
                                          max_delay_s=0.002, max_queue=4096,
                                          concurrency=concurrency)
                rate = asyncio.run(drive(batcher))
            results.setdefault(label, []).append(rate)
            executor.shutdown(wait=True)
            log(f"{label}: {rate:.0f} rows/s")
    return {k: float(np.median(v)) for k, v in results.items()}
    return results


# ----------------------------------------------------------------------------- (d) server

def serve_handwritten(port: int, model: str, setting: str) -> None:
    """The server users would otherwise write: Litestar, sync handler, run per request."""
    import onnxruntime as ort
    import uvicorn
    from litestar import Litestar, post

    session = ort.InferenceSession(model, providers=providers_for(setting))

    @post("/v2/models/mlp/infer", sync_to_thread=True, status_code=200)
    def infer(data: dict) -> dict:
        spec = data["inputs"][0]
        x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
        (y,) = session.run(None, {"x": x})
        return {"model_name": "mlp", "outputs": [
            {"name": "y", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}]}

    uvicorn.run(Litestar([infer]), host=HOST, port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


# ----------------------------------------------------------------------------- processes

class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], logfile: Path, env: dict[str, str]) -> subprocess.Popen:
        with open(logfile, "ab") as fh:
            p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        while self.procs:
            p = self.procs.pop()
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


def http(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def wait_for(port: int, path: str, proc: subprocess.Popen, timeout: float = 120,
             method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        status, payload = http(port, method, path, body, headers)
        if status == 200:
            return payload
        time.sleep(0.2)
    raise RuntimeError(f"{path} on :{port} not ready after {timeout}s")


# ----------------------------------------------------------------------------- load

def request_bodies(n: int = 16) -> list[str]:
    rng = np.random.default_rng(42)
    return [json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, IN_DIM],
                                    "data": np.round(rng.standard_normal(IN_DIM), 5).tolist()}]})
            for _ in range(n)]


LUA = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  i = (i %% #bodies) + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def run_wrk(port: int, path: str, key: str, conns: int, seconds: int, tag: str) -> dict:
    script = WORK / f"inference-{tag}.lua"
    quoted = ",".join("[[" + b + "]]" for b in request_bodies())
    script.write_text(LUA % (quoted, key))
    threads = 1 if conns == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "10s",
            "-s", str(script), f"http://{HOST}:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout + out.stderr
    (WORK / f"wrk-inference-{tag}.txt").write_text(" ".join(argv) + "\n" + text)
    r: dict = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rows_s"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        r[f"p{pct}_ms"] = _ms(m.group(1)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) requests in", text)
    r["requests"] = int(m.group(1)) if m else 0
    return r


def cli(home: Path, env: dict[str, str], *argv: str) -> str:
    out = subprocess.run([*LITEGATE, "--home", str(home), *argv],
                         capture_output=True, text=True, env=env, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"litegate {' '.join(argv)} failed: {out.stderr[-2000:]}")
    return out.stdout


def start_litegate(procs: Procs, model: Path, setting: str, workdir: Path,
                   options: list[str], delay_ms: float = 2.0, max_batch: int = 64) -> dict:
    home = workdir / "home"
    env = {**os.environ, "LITEGATE_PROVIDERS": setting, "LITEGATE_ACCESS_LOG": "0",
           "LITEGATE_LOG_LEVEL": "warning", "LITEGATE_MAX_QUEUE": "1024"}
    extra = [a for o in options for a in ("--option", o)]
    cli(home, env, "models", "add", "mlp", str(model), "--max-batch", str(max_batch),
        "--max-queue-delay-ms", str(delay_ms), "--hot", *extra)
    cli(home, env, "models", "add", "mlp_nobatch", str(model), "--max-batch", "1", "--hot",
        *extra)
    key = json.loads(cli(home, env, "keys", "create", "--name", "bench", "--json"))["key"]
    port = free_port()
    proc = procs.spawn([*LITEGATE, "--home", str(home), "serve", "--port", str(port)],
                       workdir / "litegate.log", env)
    ready = json.loads(wait_for(port, "/readyz", proc))
    providers = {name: {v: d["providers"] for v, d in m["loaded"].items()}
                 for name, m in ready.get("models", {}).get("models", {}).items()}
    return {"port": port, "key": key, "providers": providers}


def mean_batches(port: int) -> dict[str, float]:
    _, metrics = http(port, "GET", "/metrics")
    text, out = metrics.decode(), {}
    for name in ("mlp", "mlp_nobatch"):
        req = re.search(rf'litegate_model_requests_total{{model="{name}",version="1"}} (\S+)', text)
        exe = re.search(rf'litegate_model_executions_total{{model="{name}",version="1"}} (\S+)',
                        text)
        if req and exe and float(exe.group(1)):
            out[name] = float(req.group(1)) / float(exe.group(1))
    return out


def start_handwritten(procs: Procs, model: Path, setting: str, workdir: Path) -> int:
    port = free_port()
    proc = procs.spawn([sys.executable, str(Path(__file__).resolve()), "--serve-handwritten",
                        str(port), "--model", str(model), "--providers", setting],
                       workdir / "handwritten.log", dict(os.environ))
    body = request_bodies(1)[0].encode()
    wait_for(port, "/v2/models/mlp/infer", proc, method="POST", body=body,
             headers={"Content-Type": "application/json"})
    return port


def median_cells(cells: list[dict]) -> dict:
    return {k: (float(np.median([c[k] for c in cells])) if not isinstance(cells[0][k], str)
                else max(set(c[k] for c in cells), key=[c[k] for c in cells].count))
            for k in cells[0]}


# ----------------------------------------------------------------------------- report

def report(args: argparse.Namespace, med: dict, best: int, raw_providers: list[str],
           providers: dict, batches: dict) -> str:
    ceiling = med["a"]["rows_s"]
    lines = [
        f"### ONNX inference ({args.providers}) — "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/inference.py', *sys.argv[1:]])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, 1-min load before/after: {args.load_before} / "
        f"{os.getloadavg()[0]:.2f}  ",
        f"Model: MLP {IN_DIM}→{args.layers}×{HIDDEN}→{OUT_DIM} FP32, 1 row per request, v2 JSON "
        f"bodies, `wrk` {args.seconds}s per cell; {args.rounds} interleaved rounds, medians "
        "shown.  ",
        f"Providers in use: raw {raw_providers}; litegate {providers}  ",
        f"(a) raw ceiling: {ceiling:.0f} rows/s at batch {best}, best of one `session.run` "
        f"stream on all cores and two streams on half the cores each (mostly: "
        f"{med['a'].get('config')}); batch 1: "
        f"{med['a1']['rows_s']:.0f} rows/s, p50 {med['a1']['p50_ms']:.2f} ms).  ",
        "Mean batch size seen by litegate (requests / executions, whole run): "
        f"{batches.get('mlp', float('nan')):.1f} batched, "
        f"{batches.get('mlp_nobatch', float('nan')):.1f} unbatched.",
        "",
        "| concurrency | (b) litegate batched rows/s | p50 ms | p99 ms | (c) litegate no batching"
        " rows/s | p50 ms | p99 ms | (d) hand-written rows/s | p50 ms | p99 ms | (b)/(a) | (b)/(c)"
        " | (b)/(d) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k in CONCURRENCY:
        b, c, d = med[f"b{k}"], med[f"c{k}"], med[f"d{k}"]
        lines.append(
            f"| {k} | {b['rows_s']:.0f} | {b['p50_ms']:.2f} | {b['p99_ms']:.2f} "
            f"| {c['rows_s']:.0f} | {c['p50_ms']:.2f} | {c['p99_ms']:.2f} "
            f"| {d['rows_s']:.0f} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} "
            f"| {b['rows_s'] / ceiling:.2f} | {b['rows_s'] / max(c['rows_s'], 1e-9):.2f}"
            f" | {b['rows_s'] / max(d['rows_s'], 1e-9):.2f} |")
    bad = {name: sum(med[f"{key}{k}"]["non2xx"] for k in CONCURRENCY)
           for name, key in (("litegate", "b"), ("litegate-nb", "c"), ("handwritten", "d"))}
    lines += ["", f"Non-2xx responses (median per cell, summed): {bad}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", default="cpu", help="auto | cpu | cuda,cpu ...")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per cell")
    parser.add_argument("--raw-seconds", type=float, default=2.0)
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--max-batch", type=int, default=64, help="litegate --max-batch")
    parser.add_argument("--delay-ms", type=float, default=2.0,
                        help="litegate --max-queue-delay-ms")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds (medians are reported; the machine is shared)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="serving option for litegate's models (litegate models add --option)")
    parser.add_argument("--compare-executors", action="store_true",
                        help="also compare the batcher on threads vs processes (CPU only)")
    parser.add_argument("--serve-handwritten", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_handwritten:
        serve_handwritten(args.serve_handwritten, args.model, args.providers)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    args.load_before = f"{os.getloadavg()[0]:.2f}"
    globals()["HIDDEN"] = args.hidden
    procs = Procs()
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="litegate-bench-") as tmp:
        workdir = Path(tmp)
        model = build_mlp(workdir / "mlp.onnx", args.layers)
        try:
            session = raw_session(model, args.providers)
            best = best_batch(session, 1.0)
            cpus = os.cpu_count() or 2
            ceilings = {"1 stream x all cores": (session, 1)}
            if cpus > 1 and "CUDAExecutionProvider" not in session.get_providers():
                ceilings[f"2 streams x {max(1, cpus // 2)} threads"] = (
                    raw_session(model, args.providers, max(1, cpus // 2)), 2)
            lg = start_litegate(procs, model, args.providers, workdir, args.option,
                                args.delay_ms, args.max_batch)
            hw_port = start_handwritten(procs, model, args.providers, workdir)
            targets = {
                "b": (lg["port"], "/v2/models/mlp/infer", lg["key"]),
                "c": (lg["port"], "/v2/models/mlp_nobatch/infer", lg["key"]),
                "d": (hw_port, "/v2/models/mlp/infer", "none"),
            }
            for name, (port, path, key) in targets.items():
                run_wrk(port, path, key, 16, 2, f"{name}-warm")
            order = list(targets)
            for r in range(args.rounds):
                cells: dict = {"a1": raw_cell(session, 1, args.raw_seconds),
                               "a": raw_ceiling(ceilings, best, args.raw_seconds)}
                for c in CONCURRENCY:
                    for name in order:
                        port, path, key = targets[name]
                        cells[f"{name}{c}"] = run_wrk(port, path, key, c, args.seconds,
                                                      f"r{r}-{name}-c{c}")
                        log(f"round {r} ({name}) c={c}: {cells[f'{name}{c}']['rows_s']:.0f} rows/s"
                            f" p50 {cells[f'{name}{c}']['p50_ms']:.2f} ms")
                order = order[1:] + order[:1]  # rotate who goes first
                rounds.append(cells)
            batches = mean_batches(lg["port"])
            procs.stop_all()
            executors = (compare_executors(model, args.raw_seconds * 2, args.rounds)
                         if args.compare_executors else {})
        finally:
            procs.stop_all()
            for name in ("litegate.log", "handwritten.log"):
                if (workdir / name).exists():
                    (WORK / f"inference-{name}").write_bytes((workdir / name).read_bytes())
    med = {k: median_cells([r[k] for r in rounds]) for k in rounds[0]}
    (WORK / "inference.json").write_text(json.dumps(
        {"rounds": rounds, "median": med, "best_batch": best, "providers": lg["providers"],
         "raw_providers": session.get_providers(), "mean_batch": batches,
         "executors": executors}, indent=2, default=str))
    table = report(args, med, best, session.get_providers(), lg["providers"], batches)
    if executors:
        table += ("\nBatcher executor, in-process, 64 concurrent 1-row clients, no HTTP "
                  "(rows/s, median of the rounds):\n\n" + "\n".join(f"- {k}: {v:.0f}" for k, v in executors.items())
                  + "\n")
    print(table)
    if args.write:
        with open(RESULTS, "a") as fh:
            fh.write("\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
