"""Streaming benchmark: time to first token and the worst inter-chunk gap through each
gateway, side by side with the same upstream reached directly.

One command, one run::

    bench/peers_setup.sh litellm portkey          # once: the peers' own environments
    .venv/bin/python bench/stream.py              # prints the table
    .venv/bin/python bench/stream.py --write      # ... and appends it to bench/RESULTS.md

The upstream (``--serve-upstream``, aiohttp) answers every streamed chat completion with
``--chunks`` (50) SSE chunks ``--gap-ms`` (20) apart, then a usage chunk and ``[DONE]``.
Gateways run under ``taskset -c --gateway-cpus`` (core 0); the upstream and this client
under ``--client-cpus`` (core 1). Targets:

- ``direct``    the client straight to the upstream (the baseline);
- ``litegate``  ``litegate serve`` (auth + limits + metrics + usage accounting), route
                ``chat`` -> the upstream;
- ``litellm``   LiteLLM proxy, one worker, master key, no database (``bench/.peers/litellm``);
- ``portkey``   Portkey's open-source gateway on Node (npm ``@portkey-ai/gateway`` in
                ``bench/.peers/node``), provider and base URL in its request headers.

For each concurrency (``--concurrency`` 1,100,400) and target, ``--streams-per-slot`` x
concurrency streams (at least 20) go through a semaphore of that size on one aiohttp
session; each stream records the time to its first content chunk and its largest gap
between two chunks. A cell stops after ``--cell-timeout`` seconds: streams not finished by
then count as incomplete (a slow peer cannot hold the run hostage). Each gateway runs alone
on its core: started for its turn in a round (warm-up, then every concurrency), stopped
after it. ``--rounds`` interleaved rounds (who goes first rotates); the table shows medians
of the
rounds' p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
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

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
PEERS = BENCH / ".peers"
RESULTS = BENCH / "RESULTS.md"
HOST = "127.0.0.1"
LITEGATE = [sys.executable, "-c", "import sys; from litegate.cli import main; sys.exit(main())"]
LITELLM_KEY = "sk-bench-stream-master"
ALL_TARGETS = ("direct", "litegate", "litellm", "portkey")


def log(msg: str) -> None:
    print(f"[bench-stream] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def taskset(cpus: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


# ----------------------------------------------------------------------------- upstream

def serve_upstream(port: int, chunks: int, gap_s: float) -> None:
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({
                "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(chunks):
            chunk = {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": f"t{i} "},
                                  "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await asyncio.sleep(gap_s)
        usage = {"id": "s", "object": "chat.completion.chunk", "created": 0, "model": "m",
                 "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": chunks,
                                          "total_tokens": chunks + 5}}
        await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    print(f"READY {port}", flush=True)
    web.run_app(app, host=HOST, port=port, print=None, access_log=None, backlog=2048)


# ----------------------------------------------------------------------------- client

async def one_stream(session, url: str, headers: dict[str, str], model: str) -> tuple:
    t0 = time.perf_counter()
    first, last, worst, n = None, t0, 0.0, 0
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(url, json=body, headers=headers) as resp:
        if resp.status != 200:
            await resp.read()
            raise RuntimeError(f"HTTP {resp.status}")
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            if b'"content"' not in line:
                continue  # role-only or usage chunks are not tokens
            now = time.perf_counter()
            if first is None:
                first = now - t0
            else:
                worst = max(worst, now - last)
            last, n = now, n + 1
    return first, worst, n, time.perf_counter() - t0


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_cell(url: str, headers: dict[str, str], model: str, concurrency: int,
                   total: int, timeout: float, chunks: int) -> dict:
    import aiohttp

    out: list[tuple] = []
    errors: list[str] = []
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeouts = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeouts) as session:
        async def guarded() -> None:
            async with sem:
                try:
                    out.append(await one_stream(session, url, headers, model))
                except Exception as exc:  # a failed stream is counted, not fatal
                    errors.append(repr(exc)[:120])

        tasks = [asyncio.ensure_future(guarded()) for _ in range(total)]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    ok = [o for o in out if o[0] is not None and o[2] >= chunks]
    ttft = [o[0] * 1e3 for o in ok]
    gaps = [o[1] * 1e3 for o in ok]
    dur = [o[3] * 1e3 for o in ok]
    return {"streams": total, "complete": len(ok), "errors": len(errors),
            "incomplete": total - len(ok), "error_sample": errors[:3],
            "ttft_p50": quantile(ttft, 0.5), "ttft_p99": quantile(ttft, 0.99),
            "gap_p50": quantile(gaps, 0.5), "gap_p99": quantile(gaps, 0.99),
            "total_p50": quantile(dur, 0.5), "total_p99": quantile(dur, 0.99)}


# ----------------------------------------------------------------------------- processes

class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], logfile: Path, env: dict[str, str],
              cwd: Path | None = None) -> subprocess.Popen:
        with open(logfile, "ab") as fh:
            p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                 start_new_session=True)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        while self.procs:
            self.stop(self.procs[-1])

    def stop(self, p: subprocess.Popen) -> None:
        if p in self.procs:
            self.procs.remove(p)
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


def cpu_s(pid: int) -> float:
    """utime + stime of the process and its children (Node, LiteLLM's workers), seconds."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 120,
               headers: dict[str, str] | None = None) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before ready")
        req = urllib.request.Request(f"http://{HOST}:{port}{path}", headers=headers or {})
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(req, timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic() - t0
        time.sleep(0.2)
    raise RuntimeError(f"{path} on :{port} not ready after {timeout:g} s")


def cli(env: dict[str, str], *argv: str) -> str:
    out = subprocess.run([*LITEGATE, *argv], capture_output=True, text=True, env=env,
                         timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"litegate {' '.join(argv)} failed: {out.stderr[-1500:]}")
    return out.stdout


def start_litegate(procs: Procs, work: Path, up: int, cpus: str) -> dict:
    home = work / "litegate-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITEGATE_")}
    env.update(LITEGATE_HOME=str(home), LITEGATE_LOG_LEVEL="warning")
    home.mkdir()
    cfg = home / "stream.yaml"
    cfg.write_text(
        "upstreams:\n"
        f"  - {{name: up, kind: openai, base_url: 'http://{HOST}:{up}/v1', timeout_s: 300}}\n"
        "routes:\n"
        "  - name: chat\n"
        "    variants: [{upstream: up, model: m, weight: 100}]\n"
        "    sticky: none\n"
        '    limits: ["1000000/minute"]\n')
    cli(env, "config", "apply", str(cfg))
    out = cli(env, "keys", "create", "--name", "bench", "--limit", "1000000/minute", "--json")
    key = json.loads(re.search(r"\{.*\}", out, re.S).group(0))["key"]
    port = free_port()
    proc = procs.spawn(taskset(cpus, [*LITEGATE, "serve", "--host", HOST, "--port", str(port)]),
                       work / "litegate.log", env)
    wait_ready(port, "/readyz", proc)
    return {"port": port, "headers": {"Authorization": f"Bearer {key}"}, "model": "chat",
            "label": "litegate serve", "pid": proc.pid, "proc": proc}


def start_litellm(procs: Procs, work: Path, up: int, cpus: str) -> dict:
    exe = PEERS / "litellm" / "bin" / "litellm"
    if not exe.exists():
        raise RuntimeError("LiteLLM is not installed: run bench/peers_setup.sh litellm")
    cfg = work / "litellm.yaml"
    cfg.write_text(
        "model_list:\n  - model_name: chat\n    litellm_params:\n"
        f"      model: openai/m\n      api_base: http://{HOST}:{up}/v1\n      api_key: sk-x\n"
        f"general_settings:\n  master_key: {LITELLM_KEY}\n")
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False"}
    proc = procs.spawn(taskset(cpus, [str(exe), "--config", str(cfg), "--host", HOST,
                                      "--port", str(port), "--num_workers", "1"]),
                       work / "litellm.log", env, cwd=work)
    wait_ready(port, "/health/readiness", proc, timeout=180)
    version = subprocess.run([str(PEERS / "litellm" / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True).stdout.strip()
    return {"port": port, "headers": {"Authorization": f"Bearer {LITELLM_KEY}"},
            "model": "chat", "label": f"LiteLLM proxy {version} (1 worker)", "pid": proc.pid,
            "proc": proc}


def start_portkey(procs: Procs, work: Path, up: int, cpus: str) -> dict:
    pkg = PEERS / "node" / "node_modules" / "@portkey-ai" / "gateway"
    js = pkg / "build" / "start-server.js"
    if not js.exists():
        raise RuntimeError("Portkey is not installed: run bench/peers_setup.sh portkey")
    port = free_port()
    env = {**os.environ, "NODE_ENV": "production", "BIND_HOST": HOST}
    # Its CLI has no host option: the preload binds its listener to 127.0.0.1.
    proc = procs.spawn(taskset(cpus, ["node", "--require", str(BENCH / "node_loopback.cjs"),
                                      str(js), f"--port={port}", "--headless"]),
                       work / "portkey.log", env)
    headers = {"Authorization": "Bearer sk-x", "x-portkey-provider": "openai",
               "x-portkey-custom-host": f"http://{HOST}:{up}/v1"}
    wait_ready(port, "/", proc)
    version = json.loads((pkg / "package.json").read_text())["version"]
    return {"port": port, "headers": headers, "model": "m",
            "label": f"Portkey gateway {version} (Node {_node_version()})", "pid": proc.pid,
            "proc": proc}


def _node_version() -> str:
    with contextlib.suppress(OSError):
        return subprocess.run(["node", "--version"], capture_output=True,
                              text=True).stdout.strip()
    return "?"


# ----------------------------------------------------------------------------- report

def fmt(v: float | None, f: str = "{:.1f}") -> str:
    return "—" if v is None else f.format(v)


def median(values: list) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def report(args: argparse.Namespace, targets: dict, med: dict, skipped: dict) -> str:
    conc = [int(c) for c in args.concurrency.split(",")]
    lines = [
        f"### Streaming — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/stream.py', *sys.argv[1:]])}` at "
        f"commit {args.commit}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), Python "
        f"{platform.python_version()}; load average before {args.load_before}, after "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}  ",
        f"Upstream: {args.chunks} chunks {args.gap_ms:g} ms apart per stream; gateways under "
        f"`taskset -c {args.gateway_cpus or 'all'}`, upstream and client under `taskset -c "
        f"{args.client_cpus or 'all'}`, one gateway up at a time; {args.streams_per_slot}× "
        f"concurrency streams per cell (≥ 20), {args.rounds} interleaved rounds, medians of the "
        "rounds' p50 / p99 (ms). "
        "TTFT = request sent → first content chunk; worst gap = a stream's largest interval "
        "between two content chunks (the upstream's own is the gap).",
        "",
        "| streams | target | TTFT p50 | TTFT p99 | worst gap p50 | worst gap p99 | stream p50 "
        "| incomplete / errors | TTFT p50 − direct | gap p99 − direct | gateway CPU ms per "
        "stream |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in conc:
        d = med.get(f"direct|{c}")
        for name, t in targets.items():
            m = med.get(f"{name}|{c}")
            if not m:
                continue
            dt_ttft = (m["ttft_p50"] - d["ttft_p50"]
                       if d and name != "direct" and m["ttft_p50"] is not None
                       and d["ttft_p50"] is not None else None)
            dt_gap = (m["gap_p99"] - d["gap_p99"]
                      if d and name != "direct" and m["gap_p99"] is not None
                      and d["gap_p99"] is not None else None)
            lines.append(
                f"| {c} | {t['label']} | {fmt(m['ttft_p50'])} | {fmt(m['ttft_p99'])} "
                f"| {fmt(m['gap_p50'])} | {fmt(m['gap_p99'])} | {fmt(m['total_p50'], '{:.0f}')} "
                f"| {m['incomplete']:.0f} / {m['errors']:.0f} | {fmt(dt_ttft, '{:+.1f}')} "
                f"| {fmt(dt_gap, '{:+.1f}')} | {fmt(m.get('cpu_ms_per_stream'), '{:.2f}')} |")
    for name, why in skipped.items():
        lines.append(f"\n{name}: not run — {why}")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(ALL_TARGETS))
    p.add_argument("--concurrency", default="1,100,400")
    p.add_argument("--streams-per-slot", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--chunks", type=int, default=50)
    p.add_argument("--gap-ms", type=float, default=20.0)
    p.add_argument("--cell-timeout", type=float, default=60.0)
    multi = (os.cpu_count() or 1) > 1
    p.add_argument("--gateway-cpus", default="0" if multi else "")
    p.add_argument("--client-cpus", default="1" if multi else "")
    p.add_argument("--write", action="store_true", help="append the table to RESULTS.md")
    p.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream, args.chunks, args.gap_ms / 1000)
        return 0
    WORK.mkdir(parents=True, exist_ok=True)
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.commit = os.environ.get("BENCH_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
        text=True).stdout.strip() or "unknown"
    wanted = [t for t in args.targets.split(",") if t]
    conc = [int(c) for c in args.concurrency.split(",")]
    procs = Procs()
    targets: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    rounds: list[dict] = []
    if args.client_cpus:  # this process is the client
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    with tempfile.TemporaryDirectory(prefix="litegate-stream-") as tmp:
        work = Path(tmp)
        try:
            up = free_port()
            upstream = procs.spawn(taskset(args.client_cpus, [
                sys.executable, str(Path(__file__).resolve()), "--serve-upstream", str(up),
                "--chunks", str(args.chunks), "--gap-ms", str(args.gap_ms)]),
                work / "upstream.log", dict(os.environ))
            wait_ready(up, "/v1/models", upstream)
            starters = {"litegate": start_litegate, "litellm": start_litellm,
                        "portkey": start_portkey}
            # Each gateway runs alone on its core, started for its turn and stopped after
            # it: an idle peer (LiteLLM's background tasks) would otherwise take slices of
            # the core from the one being measured.
            order = list(wanted)
            for r in range(args.rounds):
                cells: dict = {}
                for name in order:
                    if name in skipped:
                        continue
                    sub = work / f"r{r}-{name}"
                    sub.mkdir()
                    try:
                        t = ({"port": up, "headers": {}, "model": "m",
                              "label": "direct (no gateway)"} if name == "direct"
                             else starters[name](procs, sub, up, args.gateway_cpus))
                    except (RuntimeError, OSError) as exc:
                        skipped[name] = str(exc)
                        log(f"{name} not run: {exc}")
                        continue
                    try:
                        url = f"http://{HOST}:{t['port']}/v1/chat/completions"
                        warm = asyncio.run(run_cell(url, t["headers"], t["model"], 4, 8, 60,
                                                    args.chunks))
                        if not warm["complete"]:  # a peer that cannot stream: recorded
                            skipped[name] = (f"{t['label']}: no warm-up stream completed "
                                             f"({', '.join(warm['error_sample'])}; see its "
                                             "log in bench/.work/)")
                            log(f"{name} not run: {skipped[name]}")
                            continue
                        targets.setdefault(name, t)
                        for c in conc:
                            cpu0 = cpu_s(t["pid"]) if "pid" in t else None
                            cell = asyncio.run(run_cell(url, t["headers"], t["model"], c,
                                                        max(20, args.streams_per_slot * c),
                                                        args.cell_timeout, args.chunks))
                            # The gateway's CPU per completed stream: steadier than
                            # latency when other jobs share the core.
                            cell["cpu_ms_per_stream"] = (
                                (cpu_s(t["pid"]) - cpu0) * 1e3 / cell["complete"]
                                if cpu0 is not None and cell["complete"] else None)
                            cells[f"{name}|{c}"] = cell
                            log(f"round {r} {name} c={c}: ttft p50 {fmt(cell['ttft_p50'])} "
                                f"p99 {fmt(cell['ttft_p99'])} gap p99 {fmt(cell['gap_p99'])} "
                                f"incomplete {cell['incomplete']} errors "
                                f"{cell['error_sample']}")
                            time.sleep(0.5)
                    finally:
                        if "proc" in t:
                            procs.stop(t["proc"])
                order = order[1:] + order[:1]
                rounds.append(cells)
        finally:
            procs.stop_all()
            for path in work.rglob("*.log"):  # the last round's log of each
                (WORK / f"stream-{path.name}").write_bytes(path.read_bytes())
    keys = [k for r in rounds for k in r]
    med = {k: {f: median([r[k][f] for r in rounds if k in r])
               for f in ("ttft_p50", "ttft_p99", "gap_p50", "gap_p99", "total_p50",
                         "incomplete", "errors", "cpu_ms_per_stream")}
           for k in dict.fromkeys(keys)}
    (WORK / "stream.json").write_text(json.dumps({"rounds": rounds, "median": med,
                                                  "skipped": skipped}, indent=2))
    table = report(args, targets, med, skipped)
    print(table)
    if args.write:
        with open(RESULTS, "a") as fh:
            fh.write("\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
