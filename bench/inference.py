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

Targets, all up side by side on 127.0.0.1, every one under ``taskset -c --server-cpus``
(default core 0) with ONNX Runtime intra-op threads ``--intra-op`` (1), loaded by ``wrk``
under ``taskset -c --client-cpus`` (core 1) with the same v2 JSON bodies, 1 row per request:

- ``litegate``     ``litegate serve`` (auth, limits, metrics on) -> ``POST
                   /v2/models/mlp/infer`` with dynamic batching (``--max-batch`` 64,
                   ``--delay-ms`` 2);
- ``litegate-nb``  the same server, model ``mlp_nobatch`` registered with ``--max-batch 1``;
- ``litegate-2runs`` (opt-in) the same server and model with ``--option instances=2``: two
                   batches in flight on the one core;
- ``pytriton``     NVIDIA Triton Inference Server through PyTriton (``bench/peers_setup.sh``
                   installs it into ``bench/.peers/pytriton``), dynamic batcher with the same
                   max batch and queue delay;
- ``handwritten``  what users write otherwise: a minimal Litestar app under uvicorn whose
                   sync handler (thread pool) parses the JSON and calls ``session.run``;
- ``litegate@REF`` (``--refs REF[,REF…]``) an earlier commit of litegate (``git archive``
                   + ``PYTHONPATH``, as in ``proxy.py``), same model and batching, with its
                   ratios to this checkout: a regression check for the v2 path.

Raw ``session.run`` runs on the same core(s) at batch 1..128: the "fair ceiling" of a
server is raw at the batch size its load really formed (mean batch from its own metrics:
litegate's ``litegate_model_batch_rows_total / _executions_total``, Triton's
``nv_inference_count / nv_inference_exec_count``, per cell). Answers are checked against the
in-process session (8 distinct rows) before and after the load. Concurrency 1, 16 and 64,
``--rounds`` interleaved rounds (who goes first rotates), medians reported. Raw output goes to
``bench/.work/``. ``--compare-executors`` also runs the batcher in-process on a thread pool vs
a process pool.
"""

from __future__ import annotations

import argparse
import contextlib
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
PEERS = BENCH / ".peers"  # bench/peers_setup.sh installs the peers here
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
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), so, providers=providers_for(setting))


def raw_cell(session, bs: int, seconds: float, streams: int = 1) -> dict:
    """``streams`` Python threads calling ``session.run`` back to back on one session."""
    import threading

    x = np.random.default_rng(bs).standard_normal((bs, IN_DIM)).astype(np.float32)
    for _ in range(3):
        session.run(None, {"x": x})
    counts, lat = [0] * streams, []
    t0, cpu0 = time.perf_counter(), time.process_time()

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
    cpu = time.process_time() - cpu0
    return {"rows_s": sum(counts) / (time.perf_counter() - t0),
            "rows_per_cpu_s": sum(counts) / cpu if cpu > 0 else None,
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


# ----------------------------------------------------------------------------- servers

def serve_handwritten(port: int, model: str, setting: str, intra: int) -> None:
    """The server users would otherwise write: Litestar, sync handler, run per request."""
    import uvicorn
    from litestar import Litestar, post

    session = raw_session(Path(model), setting, intra)

    @post("/v2/models/mlp/infer", sync_to_thread=True, status_code=200)
    def infer(data: dict) -> dict:
        spec = data["inputs"][0]
        x = np.asarray(spec["data"], dtype=np.float32).reshape(spec["shape"])
        (y,) = session.run(None, {"x": x})
        return {"model_name": "mlp", "outputs": [
            {"name": "y", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}]}

    uvicorn.run(Litestar([infer]), host=HOST, port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


def serve_pytriton(port: int, model: str, intra: int, max_batch: int, delay_ms: float) -> None:
    """NVIDIA PyTriton (runs in bench/.peers/pytriton): the real Triton Inference Server
    binary from the wheel, dynamic batcher (max_batch_size, max_queue_delay), calling
    ``session.run`` in this process through PyTriton's Python-backend bridge."""
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])

    @batch
    def infer(**inputs):
        (y,) = session.run(["y"], {"x": inputs["x"]})
        return {"y": y}

    config = TritonConfig(http_address=HOST, http_port=port, grpc_address=HOST,
                          grpc_port=port + 1, metrics_address=HOST, metrics_port=port + 2,
                          allow_metrics=True, allow_gpu_metrics=False, allow_cpu_metrics=False)
    # SIGTERM leaves the `with` block, so PyTriton stops Triton and frees its shared memory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with Triton(config=config) as triton:
        triton.bind(model_name="mlp", infer_func=infer,
                    inputs=[Tensor(name="x", dtype=np.float32, shape=(IN_DIM,))],
                    outputs=[Tensor(name="y", dtype=np.float32, shape=(OUT_DIM,))],
                    config=ModelConfig(max_batch_size=max_batch, batcher=DynamicBatcher(
                        max_queue_delay_microseconds=int(delay_ms * 1000))),
                    strict=False)
        triton.serve()


# ----------------------------------------------------------------------------- processes

def taskset(cpus: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return pids


def cpu_s(pid: int) -> float:
    """utime + stime of the process tree, in seconds."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


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
            pids = tree(p.pid)
            for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(p.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
                try:
                    p.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # PyTriton names its shared memory pytrtion<pid>-...; never leave it behind.
            tags = tuple(f"pytrtion{q}-" for q in pids)
            for name in os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else ():
                if name.startswith(tags):
                    with contextlib.suppress(OSError):
                        os.unlink(f"/dev/shm/{name}")


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


def wait_for(port: int, path: str, proc: subprocess.Popen, timeout: float = 300,
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

def request_rows(n: int = 64) -> np.ndarray:
    return np.round(np.random.default_rng(42).standard_normal((n, IN_DIM)), 5).astype(np.float32)


def request_body(row: np.ndarray) -> str:
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, IN_DIM],
                                   "data": [float(v) for v in row]}]})


LUA = """
local bodies = {%s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
local counter = 1
setup = function(thread)
  thread:set("start", counter * 97)
  counter = counter + 1
end
request = function()
  i = ((i == 0 and (start or 0) or i) %% #bodies) + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def run_wrk(port: int, path: str, key: str, conns: int, seconds: int, tag: str,
            cpus: str = "") -> dict:
    script = WORK / f"inference-{tag}.lua"
    quoted = ",".join("[[" + request_body(r) + "]]" for r in request_rows())
    script.write_text(LUA % (quoted, key))
    threads = 1 if conns == 1 or cpus and len(cpus.split(",")) == 1 else 2
    argv = taskset(cpus, ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency",
                          "--timeout", "10s", "-s", str(script), f"http://{HOST}:{port}{path}"])
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
    if r["non2xx"]:  # non-2xx answers are not rows served
        r["rows_s"] *= max(0.0, 1 - r["non2xx"] / max(r["requests"], 1))
    return r


def cli(home: Path, env: dict[str, str], *argv: str) -> str:
    out = subprocess.run([*LITEGATE, "--home", str(home), *argv],
                         capture_output=True, text=True, env=env, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"litegate {' '.join(argv)} failed: {out.stderr[-2000:]}")
    return out.stdout


THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_litegate(procs: Procs, model: Path, args: argparse.Namespace, workdir: Path,
                   source: Path | None = None) -> dict:
    """``source``: run the litegate exported there (``--refs``) instead of this checkout's."""
    home = workdir / ("home" if source is None else f"home-{source.name}")
    env = {**os.environ, "LITEGATE_PROVIDERS": args.providers, "LITEGATE_ACCESS_LOG": "0",
           "LITEGATE_LOG_LEVEL": "warning", "LITEGATE_MAX_QUEUE": "1024"}
    if source is not None:
        env["PYTHONPATH"] = str(source)  # ahead of the editable install's finder
    if args.intra_op:
        env.update(THREAD_ENV, LITEGATE_INTRA_OP_THREADS=str(args.intra_op),
                   LITEGATE_INTER_OP_THREADS="1")
    extra = [a for o in args.option for a in ("--option", o)]
    cli(home, env, "models", "add", "mlp", str(model), "--max-batch", str(args.max_batch),
        "--max-queue-delay-ms", str(args.delay_ms), "--hot", *extra)
    cli(home, env, "models", "add", "mlp_nobatch", str(model), "--max-batch", "1", "--hot",
        *extra)
    if "litegate-2runs" in args.targets.split(","):
        # Two batches in flight, as litegate planned on one pinned core before it read the
        # affinity mask: shows what the one-run default is worth.
        cli(home, env, "models", "add", "mlp_2runs", str(model), "--max-batch",
            str(args.max_batch), "--max-queue-delay-ms", str(args.delay_ms), "--hot",
            "--option", "instances=2", *extra)
    key = json.loads(cli(home, env, "keys", "create", "--name", "bench", "--json"))["key"]
    port = free_port()
    t0 = time.perf_counter()
    proc = procs.spawn(taskset(args.server_cpus, [*LITEGATE, "--home", str(home), "serve",
                                                  "--port", str(port)]),
                       workdir / ("litegate.log" if source is None else f"{source.name}.log"),
                       env)
    ready = json.loads(wait_for(port, "/readyz", proc))
    providers = {name: {v: d["providers"] for v, d in m["loaded"].items()}
                 for name, m in ready.get("models", {}).get("models", {}).items()}
    ready_s = time.perf_counter() - t0
    return {"port": port, "key": key, "providers": providers, "pid": proc.pid,
            "ready_s": ready_s, "rss": rss_mb(proc.pid), "stats": "litegate"}


def start_handwritten(procs: Procs, model: Path, args: argparse.Namespace,
                      workdir: Path) -> dict:
    port = free_port()
    t0 = time.perf_counter()
    proc = procs.spawn(taskset(args.server_cpus, [
        sys.executable, str(Path(__file__).resolve()), "--serve-handwritten", str(port),
        "--model", str(model), "--providers", args.providers, "--intra-op", str(args.intra_op)]),
        workdir / "handwritten.log", {**os.environ, **THREAD_ENV})
    wait_for(port, "/v2/models/mlp/infer", proc, method="POST",
             body=request_body(request_rows(1)[0]).encode(),
             headers={"Content-Type": "application/json"})
    return {"port": port, "pid": proc.pid, "ready_s": time.perf_counter() - t0}


def start_pytriton(procs: Procs, model: Path, args: argparse.Namespace, workdir: Path) -> dict:
    python = PEERS / "pytriton" / "bin" / "python"
    if not (PEERS / "pytriton" / ".installed").exists():
        raise RuntimeError("PyTriton is not installed: run bench/peers_setup.sh pytriton")
    port = free_port()
    while any(not _free(port + i) for i in (1, 2)):
        port = free_port()
    libdir = subprocess.run([str(python), "-c",
                             "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True).stdout.strip()
    env = {**os.environ, **THREAD_ENV}
    if libdir:  # the Python backend stub loads libpython from here
        env["LD_LIBRARY_PATH"] = ":".join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    t0 = time.perf_counter()
    proc = procs.spawn(taskset(args.server_cpus, [
        str(python), str(Path(__file__).resolve()), "--serve-pytriton", str(port),
        "--model", str(model), "--intra-op", str(args.intra_op or 1),
        "--max-batch", str(args.max_batch), "--delay-ms", str(args.delay_ms)]),
        workdir / "pytriton.log", env)
    wait_for(port, "/v2/models/mlp/ready", proc)
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                              "print(m.version('nvidia-pytriton'))"],
                             capture_output=True, text=True).stdout.strip()
    return {"port": port, "pid": proc.pid, "ready_s": time.perf_counter() - t0,
            "metrics_port": port + 2, "version": version}


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def batch_counters(target: dict) -> tuple[float, float] | None:
    """(requests, executions) so far, from the server's own metrics."""
    if target.get("stats") == "litegate":
        _, raw = http(target["port"], "GET", "/metrics")
        # Both counted when a run ends, so requests still queued do not skew a cell.
        names = ("litegate_model_batch_rows_total", "litegate_model_executions_total")
        pattern = '{{model="{}",version="1"}} (\\S+)'.format(target["model"])
    elif target.get("stats") == "triton":
        _, raw = http(target["metrics_port"], "GET", "/metrics")
        names = ("nv_inference_count", "nv_inference_exec_count")
        pattern = r'{model="mlp",version="1"} (\S+)'
    else:
        return None
    values = []
    for name in names:
        m = re.search(re.escape(name) + pattern, raw.decode())
        if not m:
            return None
        values.append(float(m.group(1)))
    return values[0], values[1]


def check_answers(target: dict, expected: np.ndarray, rows: np.ndarray) -> bool:
    """8 distinct rows, one by one, against the in-process session."""
    for i in range(8):
        status, raw = http(target["port"], "POST", target["path"],
                           request_body(rows[i]).encode(),
                           {"Content-Type": "application/json",
                            "Authorization": f"Bearer {target.get('key', 'none')}"})
        if status != 200:
            return False
        out = next(o for o in json.loads(raw)["outputs"] if o["name"] == "y")
        if not np.allclose(np.asarray(out["data"], np.float32).ravel(), expected[i],
                           rtol=1e-3, atol=1e-4):
            return False
    return True


def median_cells(cells: list[dict]) -> dict:
    out = {}
    for k in cells[0]:
        vals = [c[k] for c in cells if c.get(k) is not None]
        out[k] = float(np.median(vals)) if vals else None
    return out


# ----------------------------------------------------------------------------- report

def report(args: argparse.Namespace, med: dict, targets: dict, raw: dict, raw_per_cpu: dict,
           checks: dict) -> str:
    names = [n for n in targets if any(f"{n}|{c}" in med for c in CONCURRENCY)]
    lines = [
        f"### ONNX inference ({args.providers}) — "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/inference.py', *sys.argv[1:]])}` "
        f"at commit {args.commit}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), "
        f"Python {platform.python_version()}; load average before {args.load_before}, after "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}  ",
        f"Model: MLP {IN_DIM}→{args.layers}×{HIDDEN}→{OUT_DIM} FP32, 1 row per request, v2 JSON "
        f"bodies (64 distinct rows), `wrk` {args.seconds} s per cell; {args.rounds} interleaved "
        f"rounds (order rotates), medians shown. Servers under `taskset -c "
        f"{args.server_cpus or 'all'}`, wrk under `taskset -c {args.client_cpus or 'all'}`; "
        f"ONNX Runtime intra-op threads {args.intra_op or 'default'} everywhere; batching "
        f"servers max batch {args.max_batch}, queue delay {args.delay_ms:g} ms.  ",
        "Raw `session.run` on the server core(s), rows/s by batch size: "
        + ", ".join(f"{b}: {v:.0f}" for b, v in sorted(raw.items()))
        + "; rows per CPU-second: "
        + ", ".join(f"{b}: {v:.0f}" for b, v in sorted(raw_per_cpu.items())) + ".  ",
        "Of fair ceiling = the server's rows/s ÷ raw rows/s at the batch size its load formed "
        "(wall clock); per CPU-s = the server's rows per CPU-second of its process tree ÷ raw "
        "rows per CPU-second at that batch — the same ratio with the other jobs' share of the "
        "core taken out.  ",
        "",
        "| target | c=1 rows/s | c=16 rows/s | c=64 rows/s | p50 / p99 ms at 64 | mean batch at 16"
        " / 64 | of fair ceiling at 64: wall / per CPU-s | rows per CPU-s at 64 | idle RSS MiB"
        " | ready s | answers |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for n in names:
        t = targets[n]
        cells = [med.get(f"{n}|{c}") for c in CONCURRENCY]
        c64 = cells[-1] or {}
        mb = [(c or {}).get("mean_batch") for c in cells[1:]]
        fair = fair_ceiling(raw, mb[-1] if mb[-1] else 1)
        fair_cpu = fair_ceiling(raw_per_cpu, mb[-1] if mb[-1] else 1)
        per_cpu = c64.get("rows_per_cpu_s")
        lines.append(
            f"| {t['label']} | " + " | ".join(f"{c['rows_s']:.0f}" if c else "—" for c in cells)
            + f" | {c64.get('p50_ms', float('nan')):.1f} / {c64.get('p99_ms', float('nan')):.1f}"
            + " | " + " / ".join(f"{b:.1f}" if b else "—" for b in mb)
            + f" | {c64.get('rows_s', 0) / fair:.2f} / "
            + (f"{per_cpu / fair_cpu:.2f}" if per_cpu else "—")
            + f" (raw at batch {fair_batch(raw, mb[-1] or 1)})"
            + (f" | {per_cpu:.0f}" if per_cpu else " | —")
            + f" | {t.get('rss', 0):.0f} | {t.get('ready_s', 0):.1f} | "
            + ("ok" if checks.get(n) else "WRONG") + " |")
    lg, tr = med.get, targets
    if "litegate" in tr and "pytriton" in tr:
        ratios = []
        for c in CONCURRENCY:
            a, b = lg(f"litegate|{c}"), lg(f"pytriton|{c}")
            if a and b and b["rows_s"]:
                ratios.append(f"c={c}: {a['rows_s'] / b['rows_s']:.2f}×")
        lines += ["", "litegate / Triton rows/s: " + ", ".join(ratios) + "."]
    for ref in [n for n in tr if n.startswith("litegate@")]:
        ratios = []
        for c in CONCURRENCY:
            a, b = lg(f"litegate|{c}"), lg(f"{ref}|{c}")
            if a and b and b["rows_s"] and a.get("rows_per_cpu_s") and b.get("rows_per_cpu_s"):
                ratios.append(f"c={c}: {a['rows_s'] / b['rows_s']:.2f}× "
                              f"({a['rows_per_cpu_s'] / b['rows_per_cpu_s']:.2f}× per CPU-s)")
        lines += ["", f"litegate / {ref} rows/s: " + ", ".join(ratios) + "."]
    non2xx = {n: sum((med.get(f"{n}|{c}") or {}).get("non2xx") or 0 for c in CONCURRENCY)
              for n in names}
    lines += ["", f"Non-2xx responses (median per cell, summed): {non2xx}.", ""]
    return "\n".join(lines)


def fair_batch(raw: dict, mean_batch: float) -> int:
    """The measured raw batch size closest to the batch the load formed."""
    return min(raw, key=lambda b: abs(b - mean_batch))


def fair_ceiling(raw: dict, mean_batch: float) -> float:
    return raw[fair_batch(raw, mean_batch)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", default="cpu", help="auto | cpu | cuda,cpu ...")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per cell")
    parser.add_argument("--raw-seconds", type=float, default=1.5)
    parser.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    parser.add_argument("--max-batch", type=int, default=64, help="max batch (all batchers)")
    parser.add_argument("--delay-ms", type=float, default=2.0,
                        help="max queue delay (litegate and Triton)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds (medians are reported; the machine is shared)")
    parser.add_argument("--targets", default="litegate,pytriton,handwritten,litegate-nb",
                        help="comma list of litegate, litegate-nb, litegate-2runs, pytriton, "
                        "handwritten")
    parser.add_argument("--server-cpus", default="0" if (os.cpu_count() or 1) > 1 else "",
                        help="taskset -c for every server and the raw runs ('' = no pinning)")
    parser.add_argument("--client-cpus", default="1" if (os.cpu_count() or 1) > 1 else "",
                        help="taskset -c for wrk")
    parser.add_argument("--intra-op", type=int, default=1,
                        help="ONNX Runtime intra-op threads for every target (0 = ORT default)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="serving option for litegate's models (litegate models add --option)")
    parser.add_argument("--refs", default="",
                        help="earlier commits of litegate to run beside this checkout "
                        "(comma list; target litegate@REF, batching as for litegate)")
    parser.add_argument("--compare-executors", action="store_true",
                        help="also compare the batcher on threads vs processes (CPU only)")
    parser.add_argument("--serve-handwritten", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-pytriton", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_handwritten:
        serve_handwritten(args.serve_handwritten, args.model, args.providers, args.intra_op)
        return 0
    if args.serve_pytriton:
        serve_pytriton(args.serve_pytriton, args.model, args.intra_op, args.max_batch,
                       args.delay_ms)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.commit = os.environ.get("BENCH_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
        text=True).stdout.strip() or "unknown"
    globals()["HIDDEN"] = args.hidden
    wanted = [t for t in args.targets.split(",") if t]
    procs = Procs()
    rounds: list[dict] = []
    targets: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="litegate-bench-") as tmp:
        workdir = Path(tmp)
        model = build_mlp(workdir / "mlp.onnx", args.layers)
        rows = request_rows()
        try:
            # The raw runs happen on the servers' core(s), one stream, same thread settings.
            main_cpus = os.sched_getaffinity(0)
            if args.server_cpus:
                os.sched_setaffinity(0, {int(c) for c in args.server_cpus.split(",")})
            session = raw_session(model, args.providers, args.intra_op)
            expected = session.run(None, {"x": rows})[0]
            os.sched_setaffinity(0, main_cpus)
            if {"litegate", "litegate-nb", "litegate-2runs"} & set(wanted):
                base = start_litegate(procs, model, args, workdir)
                if "litegate" in wanted:
                    targets["litegate"] = {**base, "path": "/v2/models/mlp/infer", "model": "mlp",
                                           "label": "**litegate** (auth + limits + metrics on)"}
                if "litegate-2runs" in wanted:
                    targets["litegate-2runs"] = {
                        **base, "path": "/v2/models/mlp_2runs/infer", "model": "mlp_2runs",
                        "label": "litegate, 2 batches in flight (`--option instances=2`)"}
                if "litegate-nb" in wanted:
                    targets["litegate-nb"] = {**base, "path": "/v2/models/mlp_nobatch/infer",
                                              "model": "mlp_nobatch",
                                              "label": "litegate, batching off (same server)"}
            for ref in [r.strip() for r in args.refs.split(",") if r.strip()]:
                from proxy import export_ref  # not at the top: peers' Pythons run this file

                targets[f"litegate@{ref}"] = {
                    **start_litegate(procs, model, args, workdir, export_ref(ref, workdir)),
                    "path": "/v2/models/mlp/infer", "model": "mlp", "label": f"litegate @ {ref}"}
            if "pytriton" in wanted:
                try:
                    tr = start_pytriton(procs, model, args, workdir)
                    targets["pytriton"] = {
                        "port": tr["port"], "path": "/v2/models/mlp/infer", "stats": "triton",
                        "metrics_port": tr["metrics_port"], "ready_s": tr["ready_s"],
                        "pid": tr["pid"],
                        "rss": rss_mb(tr["pid"]),
                        "label": f"Triton via PyTriton {tr['version']}, dynamic batching"}
                except RuntimeError as exc:
                    log(f"pytriton not run: {exc}")
            if "handwritten" in wanted:
                hw = start_handwritten(procs, model, args, workdir)
                targets["handwritten"] = {"port": hw["port"], "path": "/v2/models/mlp/infer",
                                          "pid": hw["pid"],
                                          "ready_s": hw["ready_s"], "rss": rss_mb(hw["pid"]),
                                          "label": "hand-written Litestar + ORT, no batching"}
            checks = {n: check_answers(t, expected, rows) for n, t in targets.items()}
            for name, t in targets.items():
                run_wrk(t["port"], t["path"], t.get("key", "none"), 16, 2, f"{name}-warm",
                        args.client_cpus)
            order = list(targets)
            raw_runs: dict[int, list[float]] = {}
            raw_cpu: dict[int, list[float]] = {}
            for r in range(args.rounds):
                if args.server_cpus:
                    os.sched_setaffinity(0, {int(c) for c in args.server_cpus.split(",")})
                for bs in (1, 8, 16, 32, 48, 64, 128):
                    cell = raw_cell(session, bs, args.raw_seconds)
                    raw_runs.setdefault(bs, []).append(cell["rows_s"])
                    raw_cpu.setdefault(bs, []).append(cell["rows_per_cpu_s"])
                os.sched_setaffinity(0, main_cpus)
                cells: dict = {}
                for c in CONCURRENCY:
                    for name in order:
                        t = targets[name]
                        before, cpu_before = batch_counters(t), cpu_s(t["pid"])
                        cell = run_wrk(t["port"], t["path"], t.get("key", "none"), c,
                                       args.seconds, f"r{r}-{name}-c{c}", args.client_cpus)
                        after, used = batch_counters(t), cpu_s(t["pid"]) - cpu_before
                        # Rows per CPU-second of the server's process tree: steadier than
                        # rows/s when other jobs take turns on the same core.
                        cell["rows_per_cpu_s"] = ((cell["requests"] - cell["non2xx"]) / used
                                                  if used > 0 else None)
                        cell["mean_batch"] = (
                            (after[0] - before[0]) / (after[1] - before[1])
                            if before and after and after[1] > before[1] else None)
                        cells[f"{name}|{c}"] = cell
                        log(f"round {r} {name} c={c}: {cell['rows_s']:.0f} rows/s p50 "
                            f"{cell['p50_ms']:.2f} ms batch {cell['mean_batch']}")
                        time.sleep(0.5)  # let the queue drain before the next cell
                order = order[1:] + order[:1]  # rotate who goes first
                rounds.append(cells)
            checks = {n: checks[n] and check_answers(t, expected, rows)
                      for n, t in targets.items()}
            procs.stop_all()
            executors = (compare_executors(model, args.raw_seconds * 2, args.rounds)
                         if args.compare_executors else {})
        finally:
            procs.stop_all()
            for log_file in workdir.glob("*.log"):
                (WORK / f"inference-{log_file.name}").write_bytes(log_file.read_bytes())
    med = {k: median_cells([r[k] for r in rounds if k in r]) for k in rounds[0]}
    raw = {bs: float(np.median(v)) for bs, v in raw_runs.items()}
    raw_per_cpu = {bs: float(np.median(v)) for bs, v in raw_cpu.items()}
    (WORK / "inference.json").write_text(json.dumps(
        {"rounds": rounds, "median": med, "raw": raw, "raw_per_cpu": raw_per_cpu,
         "checks": checks,
         "targets": {n: {k: v for k, v in t.items() if k != "key"} for n, t in targets.items()},
         "executors": executors}, indent=2, default=str))
    table = report(args, med, targets, raw, raw_per_cpu, checks)
    if executors:
        table += ("\nBatcher executor, in-process, 64 concurrent 1-row clients, no HTTP "
                  "(rows/s, median of the rounds):\n\n"
                  + "\n".join(f"- {k}: {v:.0f}" for k, v in executors.items()) + "\n")
    print(table)
    if args.write:
        with open(RESULTS, "a") as fh:
            fh.write("\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
