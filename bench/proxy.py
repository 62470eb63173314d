"""Proxy benchmark: litegate side by side with a ceiling forwarder and LiteLLM.

One command, one run::

    .venv/bin/python bench/proxy.py                       # all four targets, 15 s each
    .venv/bin/python bench/proxy.py --targets mock,ceiling --duration 5
    .venv/bin/python bench/proxy.py --targets mock,ceiling,litegate --servers uvicorn,granian --h2

``--servers uvicorn,granian[,hypercorn]`` runs ``ceiling`` and ``litegate`` once per ASGI server
(``ceiling+granian`` = ``bench/ceiling_servers.py``, ``litegate+granian`` = ``litegate serve
--server granian``; hypercorn: ceiling only); ``--h2`` adds an HTTP/2 load (``h2load``, h2c
with prior knowledge) and an h2 sequential probe for the targets that speak h2.

Targets (in this order, one at a time, all on 127.0.0.1):

1. ``mock``     -- direct to the mock upstream (``bench/mock_upstream.py``), the baseline;
2. ``ceiling``  -- ``bench/ceiling.py``: raw ASGI under uvicorn forwarding with one aiohttp session;
   ``ceiling-lean`` -- the same forwarder on litegate's own upstream client (``--client litegate``);
3. ``litegate`` -- ``litegate serve`` with a temp ``--home``, a key, a route ``chat`` to the mock
                   (auth + limits + metrics on, cache off);
4. ``litellm``  -- LiteLLM proxy, one worker, from its own virtualenv ``bench/.venv-litellm``
                   (created and installed by this script when missing), no database.

Per target: start-to-ready (spawn -> first 200 from its ready endpoint, and -> first good
completion), idle RSS (VmRSS summed over the process tree), a wrk warm-up, a sequential
keep-alive probe (one connection, N requests interleaved request-by-request with the same
number straight to the mock, so added latency = target - mock is measured under the same
machine conditions), ``wrk -t2 -cC -dDs --latency`` with a Lua script POSTing a chat completion
with ``Authorization: Bearer <key>``, and RSS after load. Results are appended to
``bench/RESULTS.md`` as a markdown table with the exact command and date; raw numbers go to
``bench/.work/`` as JSON. All processes are started in their own process groups and killed
in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work"
RESULTS = BENCH / "RESULTS.md"
HOST = "127.0.0.1"
ALL_TARGETS = ("mock", "ceiling", "ceiling-lean", "litegate", "litellm")
ROUTE = "chat"
UPSTREAM_MODEL = "small-model"
LITELLM_MASTER_KEY = "sk-bench-litellm-master"
CHAT_BODY = json.dumps(
    {"model": ROUTE, "messages": [{"role": "user", "content": "Say hello in five words."}],
     "max_tokens": 16, "temperature": 0}
)

# Targets from issue #2 (litegate on a 2-core machine), tightened by issue #13.
GOAL_RPS_VS_CEILING = 0.9
GOAL_RPS_VS_LITELLM = 30.0
GOAL_ADDED_P50_MS = 0.5
GOAL_IDLE_RSS_MB = 50.0
GOAL_READY_S = 0.4


# --------------------------------------------------------------------------- utilities

def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port}")


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: split after the last ')'.
        rest = stat[stat.rfind(b")") + 2:].split()
        ppid = int(rest[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_pids(pid: int) -> list[int]:
    children = _proc_children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss_mb(pid: int) -> float:
    """VmRSS summed over ``pid`` and all its descendants, in MiB."""
    total_kb = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            pass
    return total_kb / 1024.0


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def http_request(port: int, method: str, path: str, body: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class Procs:
    """Every process we start, each in its own session/process group; killed in finally."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def spawn(self, argv: list[str], logfile: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        fh = open(logfile, "ab")
        try:
            p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=cwd, start_new_session=True)
        finally:
            fh.close()
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen, grace: float = 5.0) -> None:
        if p.poll() is not None:
            # Leader gone; children in its group may still be alive.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        while self.procs:
            self.stop(self.procs.pop())


# --------------------------------------------------------------------------- targets

@dataclass
class Target:
    name: str
    label: str
    port: int
    argv: list[str]
    auth_key: str = "sk-none"
    ready_path: str | None = None      # GET endpoint returning 200 when ready (None: completion only)
    env: dict[str, str] | None = None
    ready_timeout: float = 60.0
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    name: str
    label: str
    ready_s: float | None = None
    first_completion_s: float | None = None
    idle_rss_mb: float | None = None
    load_rss_mb: float | None = None
    rps: float | None = None
    lat_p50_ms: float | None = None
    lat_p99_ms: float | None = None
    requests: int | None = None
    bad_responses: int | None = None
    socket_errors: str | None = None
    seq_p50_ms: float | None = None
    seq_p99_ms: float | None = None
    seq_mock_p50_ms: float | None = None
    seq_mock_p99_ms: float | None = None
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    seq_failures: int | None = None
    load_before: str | None = None
    load_after: str | None = None
    cpu_us_per_req: float | None = None
    cpu_util: float | None = None
    rps_rounds: list[int] | None = None
    h2_rps: float | None = None
    h2_p50_ms: float | None = None
    h2_p99_ms: float | None = None
    h2_non2xx: int | None = None
    h2_rps_rounds: list[int] | None = None
    h2_cpu_us_per_req: float | None = None
    h2_seq_p50_ms: float | None = None
    h2_seq_p99_ms: float | None = None
    h2_added_p50_ms: float | None = None
    h2_added_p99_ms: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def wait_ready(proc: subprocess.Popen, t0: float, target: Target, res: Result) -> None:
    deadline = t0 + target.ready_timeout
    headers = {"Authorization": f"Bearer {target.auth_key}", "Content-Type": "application/json"}
    phase = "ready" if target.ready_path else "completion"
    last_err = ""
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{target.name} exited with code {proc.returncode} before ready")
        try:
            if phase == "ready":
                status, body = http_request(target.port, "GET", target.ready_path, timeout=2)
                if status == 200:
                    res.ready_s = time.perf_counter() - t0
                    phase = "completion"
                    continue
                last_err = f"ready endpoint {status}: {body[:200]!r}"
            else:
                status, body = http_request(target.port, "POST", "/v1/chat/completions", CHAT_BODY,
                                            headers, timeout=5)
                if status == 200 and b'"choices"' in body:
                    res.first_completion_s = time.perf_counter() - t0
                    if res.ready_s is None:
                        res.ready_s = res.first_completion_s
                    return
                last_err = f"completion {status}: {body[:300]!r}"
        except (OSError, http.client.HTTPException) as e:
            last_err = f"{type(e).__name__}: {e}"
        time.sleep(0.005)
    raise RuntimeError(f"{target.name} not ready after {target.ready_timeout:.0f}s ({last_err})")


# --------------------------------------------------------------------------- wrk

LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not m:
        raise ValueError(value)
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def lua_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(port: int, key: str, duration: float, connections: int, threads: int,
            workdir: Path, tag: str) -> dict:
    script = workdir / f"post-{tag}.lua"
    script.write_text(LUA.format(body=lua_quote(CHAT_BODY), key=key))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(round(duration)))}s",
            "--latency", "--timeout", "10s", "-s", str(script),
            f"http://{HOST}:{port}/v1/chat/completions"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    text = out.stdout + out.stderr
    (workdir / f"wrk-{tag}.txt").write_text(" ".join(argv) + "\n" + text)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {text[-500:]}")
    r: dict = {"raw": text}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    r["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        r[f"p{pct}"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", text)
    r["socket_errors"] = m.group(1).strip() if m else None
    return r


# --------------------------------------------------------------------------- h2load

def run_h2load(port: int, key: str, workdir: Path, tag: str, *, duration: float | None = None,
               requests: int | None = None, connections: int = 8, streams: int = 8, threads: int = 2,
               h1: bool = False) -> dict:
    """``h2load`` POSTing the chat body (h2c with prior knowledge; ``h1``: HTTP/1.1, for the
    mock). Latency percentiles come from its per-request ``--log-file``."""
    body, log_file = workdir / "chat-body.json", workdir / f"h2load-{tag}.log"
    body.write_text(CHAT_BODY)
    argv = ["h2load", f"-t{min(threads, connections)}", f"-c{connections}", f"-m{streams}",
            "-d", str(body), "-H", "content-type: application/json",
            "-H", f"authorization: Bearer {key}", f"--log-file={log_file}"]
    argv += [f"-D{max(1, round(duration))}"] if duration else [f"-n{requests}"]
    argv += ["--h1"] if h1 else []
    argv.append(f"http://{HOST}:{port}/v1/chat/completions")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=(duration or 60) + 60,
                         check=False)
    text = out.stdout + out.stderr
    (workdir / f"h2load-{tag}.txt").write_text(" ".join(argv) + "\n" + text)
    m = re.search(r"finished in ([\d.]+)(s|ms), ([\d.]+) req/s", text)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"h2load failed ({out.returncode}): {text[-500:]}")
    lat, bad = [], 0
    for line in log_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            lat.append(int(parts[2]) / 1000.0)
            bad += not parts[1].startswith("2")
    lat.sort()
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", text)
    return {"rps": float(m.group(3)), "requests": int(done.group(1)) if done else len(lat),
            "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "non2xx": bad,
            "protocol": "h2" if "h2c" in text or "Application protocol: h2" in text else "?",
            "raw": text}


# --------------------------------------------------------------------------- sequential probe

async def _probe(target_port: int | None, key: str, mock_port: int, n: int, warm: int) -> dict:
    import aiohttp

    url_mock = f"http://{HOST}:{mock_port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = CHAT_BODY.encode()
    timeout = aiohttp.ClientTimeout(total=10)
    # One keep-alive connection per side.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as s_mock, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as s_tgt:
        sides = [("mock", s_mock, url_mock)]
        if target_port is not None:
            sides.append(("target", s_tgt, f"http://{HOST}:{target_port}/v1/chat/completions"))
        lat: dict[str, list[float]] = {name: [] for name, _, _ in sides}
        failures = 0
        clock = time.perf_counter_ns
        for i in range(warm + n):
            # Alternate which side goes first so neither is systematically favoured.
            order = sides if i % 2 == 0 else list(reversed(sides))
            for name, sess, url in order:
                t = clock()
                async with sess.post(url, data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                dt_ms = (clock() - t) / 1e6
                if i >= warm:
                    lat[name].append(dt_ms)
                    if not ok:
                        failures += 1
        out = {"failures": failures}
        for name, vals in lat.items():
            vals.sort()
            out[name] = {"p50": percentile(vals, 0.5), "p99": percentile(vals, 0.99),
                         "mean": statistics.fmean(vals)}
        return out


def run_probe(target_port: int | None, key: str, mock_port: int, n: int, warm: int = 50) -> dict:
    try:
        import uvloop  # same loop the servers use; lowers client-side noise

        return uvloop.run(_probe(target_port, key, mock_port, n, warm))
    except ImportError:  # pragma: no cover
        return asyncio.run(_probe(target_port, key, mock_port, n, warm))


# --------------------------------------------------------------------------- setup per target

def venv_python() -> str:
    return sys.executable


def litegate_cmd(source: Path | None = None) -> list[str]:
    """The litegate CLI: this checkout's, or the one in ``source`` (an exported commit)."""
    if source is not None:
        return [sys.executable, "-c", "import sys; from litegate.cli import main; sys.exit(main())"]
    exe = Path(sys.executable).parent / "litegate"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("litegate")
    if found:
        return [found]
    return [sys.executable, "-m", "litegate.cli"]


def export_ref(ref: str, workdir: Path) -> Path:
    """``git archive`` of ``ref`` into ``workdir``, importable by PYTHONPATH: the console
    and migrations are linked where the installed package puts them."""
    dest = workdir / f"src-{re.sub(r'[^A-Za-z0-9]+', '_', ref)}"
    if dest.exists():  # one export per commit, shared by its targets
        return dest
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    for sub in ("admin", "migrations"):
        (dest / "litegate" / sub).symlink_to(dest / sub)
    return dest


def setup_litegate(workdir: Path, mock_port: int, port: int, *, nolimits: bool = False,
                   source: Path | None = None, name: str = "litegate", server: str | None = None,
                   workers: int | None = None, redis: str | None = None) -> Target:
    """``nolimits`` (profiling only): no limit on the key or the route. ``source``: run
    the litegate exported there (``--refs``) instead of this checkout's."""
    home = Path(tempfile.mkdtemp(prefix="litegate-home-", dir=workdir))
    env = dict(os.environ)
    env["LITEGATE_HOME"] = str(home)
    for k in list(env):
        if k.startswith("LITEGATE_") and k != "LITEGATE_HOME":
            env.pop(k)  # a developer's own settings must not leak into the run
    if source is not None:
        env["PYTHONPATH"] = str(source)  # ahead of the editable install's finder
    lg = litegate_cmd(source)
    cfg = home / "bench-config.yaml"
    cfg.write_text(
        "upstreams:\n"
        f"  - {{name: mock, kind: openai, base_url: http://{HOST}:{mock_port}/v1, timeout_s: 30}}\n"
        "routes:\n"
        f"  - name: {ROUTE}\n"
        f"    variants: [{{upstream: mock, model: {UPSTREAM_MODEL}, weight: 100}}]\n"
        "    sticky: none\n"
        + ("" if nolimits else '    limits: ["1000000/minute"]\n')
    )

    def with_home(sub: list[str]) -> list[str]:
        # --home is a global option of the litegate CLI (before the sub-command).
        return lg + ["--home", str(home)] + sub

    def run(argv: list[str]) -> str:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd=home)
        (workdir / "litegate-setup.log").open("a").write(
            f"$ {shlex.join(argv)}\n(rc={out.returncode})\n{out.stdout}{out.stderr}\n")
        if out.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed ({out.returncode}): {(out.stdout + out.stderr)[-800:]}")
        return out.stdout

    run(with_home(["config", "apply"]) + [str(cfg)])
    limit = [] if nolimits else ["--limit", "1000000/minute"]
    stdout = run(with_home(["keys", "create"]) + ["--name", "bench", *limit, "--json"])
    m = re.search(r"\{.*\}", stdout, re.S)
    if not m:
        raise RuntimeError(f"litegate keys create --json printed no JSON: {stdout[-300:]}")
    key = json.loads(m.group(0))["key"]
    if source is not None:  # older commits migrate with `db upgrade`, not at start
        run(with_home(["db", "upgrade"]))
    argv = with_home(["serve", "--host", HOST, "--port", str(port)])
    label = "litegate serve" if source is None else f"litegate serve @ {name.partition('@')[2]}"
    if server is not None:
        argv += ["--server", server]
        label += f" --server {server}"
    if workers is not None:
        argv += ["--workers", str(workers)]
        label += f" --workers {workers}"
    if redis is not None:
        argv += ["--redis", redis]
        label += " --redis"
    return Target(name, label, port, argv, auth_key=key, ready_path="/readyz", env=env,
                  notes=[f"home {home.name}; route `{ROUTE}` -> mock `{UPSTREAM_MODEL}`; "
                         "auth + limits (1000000/minute key and route) + metrics, no cache"])


def ensure_litellm(venv: Path, install_timeout: float) -> Path:
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    log(f"installing litellm[proxy] into {venv} (one-off, a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True,
                   timeout=install_timeout)
    if not exe.exists():
        raise RuntimeError(f"{exe} missing after install")
    return exe


def litellm_version(venv: Path) -> str:
    try:
        out = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or "?"
    except Exception:  # noqa: BLE001
        return "?"


def setup_litellm(workdir: Path, mock_port: int, port: int, venv: Path, install_timeout: float) -> Target:
    exe = ensure_litellm(venv, install_timeout)
    cfg = workdir / "litellm-config.yaml"
    cfg.write_text(
        "model_list:\n"
        f"  - model_name: {ROUTE}\n"
        "    litellm_params:\n"
        f"      model: openai/{UPSTREAM_MODEL}\n"
        f"      api_base: http://{HOST}:{mock_port}/v1\n"
        "      api_key: sk-mock-upstream\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_MASTER_KEY}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM", "DATABASE_URL", "OPENAI"))}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"})
    argv = [str(exe), "--config", str(cfg), "--host", HOST, "--port", str(port), "--num_workers", "1"]
    return Target("litellm", f"LiteLLM proxy {litellm_version(venv)} (1 worker)", port, argv,
                  auth_key=LITELLM_MASTER_KEY, ready_path="/health/readiness", env=env,
                  ready_timeout=180.0,
                  notes=["master key, no database, LITELLM_LOCAL_MODEL_COST_MAP=True, LITELLM_LOG=ERROR"])


# --------------------------------------------------------------------------- the run

HZ = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """utime+stime of ``pid`` and its descendants, in seconds."""
    total = 0.0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / HZ
    return total


@dataclass
class Running:
    target: Target
    proc: subprocess.Popen
    res: Result
    cpu_s: float = 0.0
    wall_s: float = 0.0
    rounds: list = field(default_factory=list)
    h2_rounds: list = field(default_factory=list)
    h2_cpu_s: float = 0.0


def start_target(procs: Procs, target: Target, args, workdir: Path, res: Result) -> subprocess.Popen:
    """Spawn, time start-to-ready, then idle RSS. The process stays up for the later phases."""
    res.load_before = loadavg()
    log(f"{target.name}: starting `{shlex.join(target.argv)}`")
    t0 = time.perf_counter()
    proc = procs.spawn(target.argv, workdir / f"{target.name}.log", env=target.env, cwd=workdir)
    wait_ready(proc, t0, target, res)
    log(f"{target.name}: ready in {res.ready_s:.3f}s, first completion {res.first_completion_s:.3f}s")
    time.sleep(args.settle)
    res.idle_rss_mb = tree_rss_mb(proc.pid)
    return proc


def warm_and_probe(r: Running, args, mock_port: int, workdir: Path) -> None:
    target, res = r.target, r.res
    if args.warmup > 0:
        log(f"{target.name}: warm-up {args.warmup:.0f}s")
        run_wrk(target.port, target.auth_key, args.warmup, args.connections, args.threads, workdir,
                f"{target.name}-warmup")
    log(f"{target.name}: sequential probe {args.probe} requests")
    pr = run_probe(None if target.name == "mock" else target.port, target.auth_key, mock_port, args.probe)
    res.seq_failures = pr["failures"]
    res.seq_mock_p50_ms, res.seq_mock_p99_ms = pr["mock"]["p50"], pr["mock"]["p99"]
    if target.name == "mock":
        res.seq_p50_ms, res.seq_p99_ms = res.seq_mock_p50_ms, res.seq_mock_p99_ms
        res.added_p50_ms = res.added_p99_ms = 0.0
    else:
        res.seq_p50_ms, res.seq_p99_ms = pr["target"]["p50"], pr["target"]["p99"]
        res.added_p50_ms = res.seq_p50_ms - res.seq_mock_p50_ms
        res.added_p99_ms = res.seq_p99_ms - res.seq_mock_p99_ms
    if getattr(args, "h2", False) and speaks_h2(target.name):
        # One connection, one stream at a time, with the same client (h2load) against the
        # mock over HTTP/1.1 just before: added = target over h2 - mock.
        log(f"{target.name}: h2 sequential probe {args.probe} requests")
        base = run_h2load(args.mock_port, target.auth_key, workdir, f"{target.name}-seq-mock",
                          requests=args.probe, connections=1, streams=1, h1=True)
        h2 = run_h2load(target.port, target.auth_key, workdir, f"{target.name}-seq-h2",
                        requests=args.probe, connections=1, streams=1)
        res.h2_seq_p50_ms, res.h2_seq_p99_ms = h2["p50"], h2["p99"]
        res.h2_added_p50_ms, res.h2_added_p99_ms = h2["p50"] - base["p50"], h2["p99"] - base["p99"]


def speaks_h2(name: str) -> bool:
    """The targets whose server speaks HTTP/2 (uvicorn does not; the mock is aiohttp)."""
    return name.endswith(("+granian", "+hypercorn"))


def load_round(r: Running, args, workdir: Path, i: int) -> None:
    target = r.target
    secs = args.duration / args.rounds
    log(f"{target.name}: round {i + 1}/{args.rounds}: wrk -t{args.threads} -c{args.connections} -d{secs:.0f}s")
    c0, t0 = tree_cpu_s(r.proc.pid), time.perf_counter()
    w = run_wrk(target.port, target.auth_key, secs, args.connections, args.threads, workdir,
                f"{target.name}-r{i + 1}")
    r.cpu_s += tree_cpu_s(r.proc.pid) - c0
    r.wall_s += time.perf_counter() - t0
    r.rounds.append(w)
    if getattr(args, "h2", False) and speaks_h2(target.name):
        c, m = args.h2_connections, args.h2_streams
        log(f"{target.name}: round {i + 1}/{args.rounds}: h2load -c{c} -m{m} -D{secs:.0f}")
        c0 = tree_cpu_s(r.proc.pid)
        h = run_h2load(target.port, target.auth_key, workdir, f"{target.name}-h2-r{i + 1}",
                       duration=secs, connections=c, streams=m, threads=args.threads)
        r.h2_cpu_s += tree_cpu_s(r.proc.pid) - c0
        r.h2_rounds.append(h)


def finish_load(r: Running) -> None:
    res, rounds = r.res, r.rounds
    res.requests = sum(w["requests"] or 0 for w in rounds)
    # RPS over all rounds (each round's requests / its measured duration, summed): wrk's own figure.
    res.rps = statistics.fmean([w["rps"] for w in rounds]) if rounds else None
    res.lat_p50_ms = statistics.median([w["p50"] for w in rounds])
    res.lat_p99_ms = max(w["p99"] for w in rounds)
    res.rps_rounds = [round(w["rps"]) for w in rounds]
    res.bad_responses = sum(w["non2xx"] for w in rounds)
    errs = [w["socket_errors"] for w in rounds if w["socket_errors"]]
    res.socket_errors = "; ".join(errs) or None
    res.cpu_us_per_req = r.cpu_s / res.requests * 1e6 if res.requests else None
    res.cpu_util = r.cpu_s / r.wall_s if r.wall_s else None
    if res.cpu_util is not None and res.rps:
        res.notes.append(f"CPU during the load {res.cpu_util:.2f} cores (process tree); "
                         f"{res.rps / res.cpu_util:.0f} requests per gateway CPU-second")
    res.load_rss_mb = tree_rss_mb(r.proc.pid)
    res.load_after = loadavg()
    if r.h2_rounds:
        h2 = r.h2_rounds
        res.h2_rps = statistics.fmean([h["rps"] for h in h2])
        res.h2_p50_ms = statistics.median([h["p50"] for h in h2])
        res.h2_p99_ms = max(h["p99"] for h in h2)
        res.h2_non2xx = sum(h["non2xx"] for h in h2)
        res.h2_rps_rounds = [round(h["rps"]) for h in h2]
        served = sum(h["requests"] for h in h2)
        res.h2_cpu_us_per_req = r.h2_cpu_s / served * 1e6 if served else None
    log(f"{r.target.name}: {res.rps:.0f} rps (rounds {res.rps_rounds}), p50 {res.lat_p50_ms:.2f} ms, "
        f"p99 {res.lat_p99_ms:.2f} ms, {res.cpu_us_per_req:.0f} us CPU/req, "
        f"added seq p50 {res.added_p50_ms:.3f} ms")


def fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if v is None else f"{v:{spec}}{suffix}"


def render(results: list[Result], args, cmdline: str, started: str, meta: dict) -> str:
    lines = [
        f"## Proxy benchmark — {started}",
        "",
        f"Command: `{cmdline}` (at commit {meta.get('commit', '?')})",
        "",
        f"Machine: {meta['cpus']} CPUs ({meta['cpu_model']}), {meta['platform']}, Python {meta['python']}, "
        f"{meta['wrk']}; load average at start {meta['load_start']}, at end {meta['load_end']}.",
        f"Load: `wrk -t{args.threads} -c{args.connections} --latency` POSTing a chat completion with "
        f"`Authorization: Bearer <key>`, {args.duration:.0f} s per target"
        + (f" in {args.rounds} rounds of {args.duration / args.rounds:.0f} s interleaved across the targets "
           "(all targets stay up, idle, while another is loaded); RPS = mean of the rounds, p50 = median of "
           "the rounds' p50, p99 = worst round's p99"
           if args.rounds > 1 else "") + f"; after a {args.warmup:.0f} s warm-up. "
        "CPU µs/req = the target's process-tree CPU time (utime+stime from /proc) during the load divided by "
        "the requests served — steadier than RPS when other jobs share the machine. Sequential: "
        f"{args.probe} requests on one keep-alive aiohttp connection, interleaved request-by-request with "
        f"{args.probe} direct-to-mock requests; added = target − mock (same probe). RSS = VmRSS summed over "
        "the process tree. Ready = spawn → first 200 from the ready endpoint (`/readyz`, LiteLLM "
        "`/health/readiness`; ceiling and mock: first completion); 1st completion = spawn → first 200 "
        "completion.",
        "",
        "| target | RPS | CPU µs/req | p50 ms | p99 ms | non-2xx | seq p50 ms | seq p99 ms | added p50 ms "
        "| added p99 ms | idle RSS MiB | RSS after load MiB | ready s | 1st completion s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.label} | failed: {r.error.replace('|', '/')[:200]} |" + " |" * 13)
            continue
        lines.append(
            f"| {r.label} | {fmt(r.rps, '.0f')} | {fmt(r.cpu_us_per_req, '.0f')} | {fmt(r.lat_p50_ms)} | "
            f"{fmt(r.lat_p99_ms)} | "
            f"{r.bad_responses if r.bad_responses is not None else '—'} | {fmt(r.seq_p50_ms, '.3f')} | "
            f"{fmt(r.seq_p99_ms, '.3f')} | {fmt(r.added_p50_ms, '.3f')} | {fmt(r.added_p99_ms, '.3f')} | "
            f"{fmt(r.idle_rss_mb, '.1f')} | {fmt(r.load_rss_mb, '.1f')} | {fmt(r.ready_s, '.3f')} | "
            f"{fmt(r.first_completion_s, '.3f')} |"
        )
    by = {r.name: r for r in results if not r.error}
    lines.append("")
    lg, ce, ll = by.get("litegate"), by.get("ceiling"), by.get("litellm")
    checks = []
    if ce and ce.rps and lg and lg.rps:
        ratio = lg.rps / ce.rps
        checks.append(f"litegate / ceiling RPS = **{ratio:.2f}×** (goal ≥ {GOAL_RPS_VS_CEILING}×: "
                      f"{'met' if ratio >= GOAL_RPS_VS_CEILING else 'MISSED'})")
    lean = by.get("ceiling-lean")
    if lean and lean.rps and lg and lg.rps and lean.cpu_us_per_req and lg.cpu_us_per_req:
        checks.append(f"litegate / ceiling on litegate's client: RPS {lg.rps / lean.rps:.2f}×, "
                      f"by CPU per request {lean.cpu_us_per_req / lg.cpu_us_per_req:.2f}×")
    if ce and ce.cpu_us_per_req and lg and lg.cpu_us_per_req:
        checks.append(f"litegate / ceiling by CPU per request (ceiling µs ÷ litegate µs) = "
                      f"{ce.cpu_us_per_req / lg.cpu_us_per_req:.2f}× — the RPS ratio litegate would reach "
                      "with the same CPU; the machine's noise moves it less")
    if ll and ll.rps and lg and lg.rps:
        ratio = lg.rps / ll.rps
        checks.append(f"litegate / LiteLLM RPS = **{ratio:.1f}×** (goal ≥ {GOAL_RPS_VS_LITELLM:.0f}×: "
                      f"{'met' if ratio >= GOAL_RPS_VS_LITELLM else 'MISSED'})")
    if ce and ce.rps and ll and ll.rps:
        checks.append(f"ceiling / LiteLLM RPS = {ce.rps / ll.rps:.1f}×")
    if lg:
        if lg.added_p50_ms is not None:
            checks.append(f"litegate sequential added p50 = **{lg.added_p50_ms:.3f} ms** (goal ≤ "
                          f"{GOAL_ADDED_P50_MS} ms: {'met' if lg.added_p50_ms <= GOAL_ADDED_P50_MS else 'MISSED'})")
        if lg.idle_rss_mb is not None:
            checks.append(f"litegate idle RSS = **{lg.idle_rss_mb:.1f} MiB** (goal ≤ {GOAL_IDLE_RSS_MB:.0f} MB: "
                          f"{'met' if lg.idle_rss_mb <= GOAL_IDLE_RSS_MB else 'MISSED'})")
        if lg.ready_s is not None:
            checks.append(f"litegate start-to-ready = **{lg.ready_s:.3f} s** (goal ≤ {GOAL_READY_S:g} s: "
                          f"{'met' if lg.ready_s <= GOAL_READY_S else 'MISSED'})")
    if ce and ce.added_p50_ms is not None:
        checks.append(f"ceiling sequential added p50 = {ce.added_p50_ms:.3f} ms")
    for name, other in by.items():  # --refs: this checkout against earlier commits
        if lg and name.startswith("litegate@") and other.rps and lg.rps:
            ref = name.partition("@")[2]
            line = f"litegate / litegate@{ref} RPS = **{lg.rps / other.rps:.2f}×**"
            if lg.cpu_us_per_req and other.cpu_us_per_req:
                line += f", by CPU per request {other.cpu_us_per_req / lg.cpu_us_per_req:.2f}×"
            if lg.added_p50_ms is not None and other.added_p50_ms is not None:
                line += (f"; added p50 {lg.added_p50_ms:.3f} vs {other.added_p50_ms:.3f} ms")
            checks.append(line)
    scaled = [r for r in results if r.name.startswith("litegate-w") and r.rps and not r.error]
    for r in scaled:
        count, _, ref = r.name.removeprefix("litegate-w").partition("@")
        one = next((o for o in scaled if o.name == f"litegate-w{scaled_first(scaled, ref)}"
                    + (f"@{ref}" if ref else "")), None)
        if one is not None and one is not r:
            line = (f"{r.label} / {one.label}: RPS **{r.rps / one.rps:.2f}×**, gateway cores used "
                    f"{fmt(r.cpu_util)} vs {fmt(one.cpu_util)}")
            if r.cpu_us_per_req and one.cpu_us_per_req:
                line += (f", requests per gateway CPU-second {1e6 / r.cpu_us_per_req:.0f} vs "
                         f"{1e6 / one.cpu_us_per_req:.0f}")
            checks.append(line)
    servers = [r for r in results if not r.error and r.name.startswith(("ceiling", "litegate"))
               and "@" not in r.name and not r.name.startswith("litegate-w")
               and r.name != "ceiling-lean"]
    if len(servers) > 2 or any(r.h2_rps for r in servers):
        lines += _server_table(by, args)
    if checks:
        lines.append("Ratios and goals (issues #2 and #13):")
        lines.append("")
        lines.extend(f"- {c}" for c in checks)
        lines.append("")
    notes = []
    for r in results:
        for n in r.notes:
            notes.append(f"{r.label}: {n}")
        if r.socket_errors:
            notes.append(f"{r.label}: wrk socket errors: {r.socket_errors}")
        if r.seq_failures:
            notes.append(f"{r.label}: {r.seq_failures} non-200 answers in the sequential probe")
        if r.rps_rounds and len(r.rps_rounds) > 1:
            notes.append(f"{r.label}: RPS per round {r.rps_rounds}")
        if r.load_before:
            notes.append(f"{r.label}: load average at its start {r.load_before}, after its load {r.load_after}")
    notes.append(
        "Noise: wrk, the mock and the target share the same 2 cores, and other jobs (test suites of other "
        "workers) may run on the machine at the same time (see the load averages); absolute numbers move "
        "by ±20% or more between runs — compare the ratios within one run, and CPU µs/req across runs.")
    lines.append("Notes:")
    lines.append("")
    lines.extend(f"- {n}" for n in notes)
    lines.append("")
    return "\n".join(lines)


def scaled_first(scaled: list[Result], ref: str) -> str:
    """The smallest worker count run for ``ref`` ("" = this checkout)."""
    counts = [int(c) for c, _, f in (r.name.removeprefix("litegate-w").partition("@") for r in scaled)
              if f == ref]
    return str(min(counts))


def _server_table(by: dict[str, Result], args) -> list[str]:
    """Per ASGI server: litegate against the ceiling on the same server, HTTP/1.1 and h2."""
    out = [f"ASGI servers (`--servers {args.servers}`): litegate and the ceiling forwarder on each "
           "server; HTTP/1.1 = the wrk rounds above; h2 = `h2load -t{t} -c{c} -m{m}` (h2c, prior "
           "knowledge; {cm} concurrent streams) in the same interleaved rounds, p50/p99 from its "
           "per-request log; h2 added = `h2load -c1 -m1 -n{n}` to the target over h2 minus the same "
           "to the mock over HTTP/1.1 (`--h1`), run just before.".format(
               t=args.threads, c=args.h2_connections, m=args.h2_streams,
               cm=args.h2_connections * args.h2_streams, n=args.probe),
           "",
           "| server | litegate RPS h1 | ceiling RPS h1 | litegate / ceiling h1 | litegate p50 / p99 ms h1 "
           "| added p50 / p99 ms h1 | litegate RPS h2 | ceiling RPS h2 | litegate / ceiling h2 "
           "| litegate p50 / p99 ms h2 | added p50 / p99 ms h2 | CPU µs/req h1 / h2 | idle RSS MiB |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for server in args.servers.split(","):
        suffix = "" if server == "uvicorn" else f"+{server}"
        lg, ce = by.get(f"litegate{suffix}"), by.get(f"ceiling{suffix}")
        if lg is None and ce is None:
            continue

        def ratio(a: float | None, b: float | None) -> str:
            return f"**{a / b:.2f}×**" if a and b else "—"

        def pair(a: float | None, b: float | None, spec: str = ".2f") -> str:
            return f"{fmt(a, spec)} / {fmt(b, spec)}"

        g = lg or Result("", "")
        out.append(
            f"| {server} | {fmt(g.rps, '.0f')} | {fmt(ce.rps if ce else None, '.0f')} | "
            f"{ratio(g.rps, ce.rps if ce else None)} | {pair(g.lat_p50_ms, g.lat_p99_ms)} | "
            f"{pair(g.added_p50_ms, g.added_p99_ms, '.3f')} | {fmt(g.h2_rps, '.0f')} | "
            f"{fmt(ce.h2_rps if ce else None, '.0f')} | {ratio(g.h2_rps, ce.h2_rps if ce else None)} | "
            f"{pair(g.h2_p50_ms, g.h2_p99_ms)} | {pair(g.h2_added_p50_ms, g.h2_added_p99_ms, '.3f')} | "
            f"{pair(g.cpu_us_per_req, g.h2_cpu_us_per_req, '.0f')} | {fmt(g.idle_rss_mb, '.1f')} |")
    out.append("")
    for r in by.values():
        if r.h2_rps_rounds:
            out.append(f"- {r.label}: h2 RPS per round {r.h2_rps_rounds}"
                       + (f", {r.h2_non2xx} non-2xx" if r.h2_non2xx else ""))
    out.append("")
    return out


def append_results(text: str, path: Path) -> None:
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by the scripts in `bench/`; newest last.\n\n")
    with path.open("a") as f:
        existing = path.read_text()
        if existing and not existing.endswith("\n\n"):
            f.write("\n" if existing.endswith("\n") else "\n\n")
        f.write(text + "\n")


def machine_meta() -> dict:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
        wrk_v = " ".join(wrk_v.split()[:2])
    except Exception:  # noqa: BLE001
        wrk_v = "wrk ?"
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=ROOT, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "litegate", "admin"],
                               capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
        rev += " (litegate/ has uncommitted changes)" if dirty else ""
    except Exception:  # noqa: BLE001
        rev = "?"
    return {"commit": rev, "cpus": os.cpu_count(), "cpu_model": cpu_model,
            "platform": platform.platform(terse=True),
            "python": platform.python_version(), "wrk": wrk_v, "load_start": loadavg()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="litegate proxy benchmark (see bench/README.md)")
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help=f"comma-separated subset of {','.join(ALL_TARGETS)} (default: all)")
    p.add_argument("--duration", type=float, default=15.0, help="wrk seconds per target (default 15)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--rounds", type=int, default=3,
                   help="split each target's --duration into this many wrk runs, interleaved across "
                        "targets (default 3; 1 = one wrk run per target)")
    p.add_argument("--warmup", type=float, default=3.0, help="wrk warm-up seconds per target (default 3)")
    p.add_argument("--probe", type=int, default=500, help="sequential requests per target (default 500)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds idle before idle RSS (default 1)")
    p.add_argument("--litellm-venv", type=Path, default=BENCH / ".venv-litellm")
    p.add_argument("--install-timeout", type=float, default=1200.0)
    p.add_argument("--results", type=Path, default=RESULTS, help="markdown file to append to")
    p.add_argument("--no-append", action="store_true", help="print the table, do not append it")
    p.add_argument("--keep", action="store_true", help="keep the per-run work dir (logs, wrk output)")
    p.add_argument("--servers", default="uvicorn",
                   help="comma-separated ASGI servers for the ceiling and litegate targets: uvicorn, "
                        "granian, hypercorn (ceiling only) (default uvicorn)")
    p.add_argument("--h2", action="store_true",
                   help="also load the targets that speak HTTP/2 with h2load (h2c), and probe them")
    p.add_argument("--h2-connections", type=int, default=8, help="h2load connections (default 8)")
    p.add_argument("--h2-streams", type=int, default=8,
                   help="h2load concurrent streams per connection (default 8)")
    p.add_argument("--workers", default="",
                   help="comma-separated worker counts: extra targets `litegate serve --workers N` "
                        "(scaling with cores; add --redis for one global quota)")
    p.add_argument("--redis", default=None,
                   help="redis URL for the --workers targets, or `auto` for a throwaway "
                        "redis-server started by the bench")
    p.add_argument("--refs", default="",
                   help="comma-separated git commits to run as extra litegate targets side by side "
                        "with this checkout's (e.g. the commit before a change)")
    args = p.parse_args(argv)

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in ALL_TARGETS]
    if unknown or not targets:
        p.error(f"unknown target(s) {unknown}; choose from {ALL_TARGETS}")
    targets = [t for t in ALL_TARGETS if t in targets]  # fixed order
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or any(s not in ("uvicorn", "granian", "hypercorn") for s in servers):
        p.error(f"--servers: choose from uvicorn, granian, hypercorn (got {args.servers!r})")
    args.servers = ",".join(servers)
    targets = [f"{t}+{s}" if s != "uvicorn" else t
               for t in targets for s in (servers if t in ("ceiling", "litegate") else ["uvicorn"])
               if not (t == "litegate" and s == "hypercorn")]
    if args.h2 and not shutil.which("h2load"):
        p.error("--h2: h2load not found on PATH (apt-get install nghttp2-client)")
    refs = [r.strip() for r in args.refs.split(",") if r.strip()]
    for ref in refs:
        if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", ref + "^{commit}"],
                          capture_output=True).returncode != 0:
            p.error(f"--refs: {ref!r} is not a commit")
    targets += [f"litegate@{ref}" for ref in refs]
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        p.error(f"--workers: comma-separated integers (got {args.workers!r})")
    if any(not 1 <= w <= 16 for w in workers):
        p.error("--workers: each count in [1, 16]")
    targets += [f"litegate-w{w}" for w in workers]
    # With --refs, each earlier commit runs with the same worker counts, side by side.
    targets += [f"litegate-w{w}@{ref}" for ref in refs for w in workers]
    if args.redis == "auto" and not shutil.which("redis-server"):
        p.error("--redis auto: redis-server not found on PATH (apt-get install redis-server)")
    if args.duration <= 0 or args.duration > 300 or args.warmup < 0 or args.warmup > 60:
        p.error("--duration must be in (0, 300] and --warmup in [0, 60]")
    if not 1 <= args.rounds <= 10 or args.duration / args.rounds < 1:
        p.error("--rounds must be in [1, 10] with at least 1 s per round")
    if not shutil.which("wrk"):
        p.error("wrk not found on PATH (apt-get install wrk)")

    cmdline = shlex.join([".venv/bin/python", "bench/proxy.py"] + (sys.argv[1:] if argv is None else argv))
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = machine_meta()
    WORK.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=time.strftime("proxy-%Y%m%d-%H%M%S-"), dir=WORK))
    log(f"work dir {workdir}")

    # SIGTERM/SIGHUP -> exception, so finally blocks kill the process groups.
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise)

    procs = Procs()
    results: list[Result] = []
    try:
        mock_port = args.mock_port = free_port()
        mock_argv = [sys.executable, str(BENCH / "mock_upstream.py"), "--host", HOST, "--port", str(mock_port)]
        mock = procs.spawn(mock_argv, workdir / "mock.log", cwd=workdir)
        mock_t0 = time.perf_counter()
        mock_target = Target("mock", "direct to mock", mock_port, mock_argv, ready_path="/v1/models")
        mock_res = Result("mock", mock_target.label)
        wait_ready(mock, mock_t0, mock_target, mock_res)
        redis_url = args.redis
        if redis_url == "auto":
            redis_port = free_port()
            procs.spawn([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                         "--bind", HOST, "--save", "", "--appendonly", "no"],
                        workdir / "redis.log", cwd=workdir)
            redis_url = f"redis://{HOST}:{redis_port}/0"
            wait_port(redis_port)

        running: list[Running] = []

        def fail(res: Result, e: Exception, r: Running | None = None) -> None:
            res.error = f"{type(e).__name__}: {e}"
            log(f"{res.name}: FAILED {res.error} (logs in {workdir})")
            if r is not None:
                if r.proc is not mock:
                    procs.stop(r.proc)
                    if r.proc in procs.procs:
                        procs.procs.remove(r.proc)
                running.remove(r)

        # Phase 1, one target at a time: start-to-ready and idle RSS. Each stays up (idle).
        for name in targets:
            port = free_port()
            res = Result(name, name)
            results.append(res)
            try:
                if name == "mock":
                    res.label = mock_target.label
                    res.ready_s, res.first_completion_s = mock_res.ready_s, mock_res.first_completion_s
                    res.load_before = loadavg()
                    time.sleep(args.settle)
                    res.idle_rss_mb = tree_rss_mb(mock.pid)
                    running.append(Running(mock_target, mock, res))
                    continue
                if name == "ceiling":
                    target = Target("ceiling", "ceiling (raw ASGI + aiohttp)", port,
                                    [sys.executable, str(BENCH / "ceiling.py"), "--host", HOST, "--port",
                                     str(port), "--upstream", f"http://{HOST}:{mock_port}"])
                elif name == "ceiling-lean":
                    target = Target(name, "ceiling on litegate's upstream client", port,
                                    [sys.executable, str(BENCH / "ceiling.py"), "--host", HOST, "--port",
                                     str(port), "--upstream", f"http://{HOST}:{mock_port}",
                                     "--client", "litegate"])
                elif name.startswith("ceiling+"):
                    server = name.partition("+")[2]
                    target = Target(name, f"ceiling (raw ASGI + aiohttp) on {server}", port,
                                    [sys.executable, str(BENCH / "ceiling_servers.py"), "--server", server,
                                     "--host", HOST, "--port", str(port),
                                     "--upstream", f"http://{HOST}:{mock_port}"])
                elif name == "litegate":
                    target = setup_litegate(workdir, mock_port, port)
                elif name.startswith("litegate+"):
                    target = setup_litegate(workdir, mock_port, port, name=name,
                                            server=name.partition("+")[2])
                elif name.startswith("litegate-w"):
                    count, _, ref = name.removeprefix("litegate-w").partition("@")
                    target = setup_litegate(workdir, mock_port, port, name=name, workers=int(count),
                                            redis=redis_url,
                                            source=export_ref(ref, workdir) if ref else None)
                elif name.startswith("litegate@"):
                    source = export_ref(name.partition("@")[2], workdir)
                    target = setup_litegate(workdir, mock_port, port, source=source, name=name)
                else:
                    target = setup_litellm(workdir, mock_port, port, args.litellm_venv, args.install_timeout)
                res.label = target.label
                res.notes.extend(target.notes)
                proc = start_target(procs, target, args, workdir, res)
                running.append(Running(target, proc, res))
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 -- one failed target must not lose the others
                fail(res, e)

        # Phase 2: warm-up and the sequential probe, one target at a time.
        for r in list(running):
            try:
                warm_and_probe(r, args, mock_port, workdir)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001
                fail(r.res, e, r)

        # Phase 3: load, in interleaved rounds, so that a change in the machine's background
        # load hits every target alike.
        for i in range(args.rounds):
            for r in list(running):
                try:
                    load_round(r, args, workdir, i)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001
                    fail(r.res, e, r)
        for r in running:
            finish_load(r)
    finally:
        procs.stop_all()

    meta["load_end"] = loadavg()
    text = render(results, args, cmdline, started, meta)
    (workdir / "results.json").write_text(json.dumps(
        {"command": cmdline, "started": started, "meta": meta, "results": [asdict(r) for r in results]},
        indent=2))
    print(text)
    if not args.no_append:
        append_results(text, args.results)
        log(f"appended to {args.results}")
    if not args.keep:
        # Keep only the small text artefacts of the last run; drop litegate homes.
        for d in workdir.glob("litegate-home-*"):
            shutil.rmtree(d, ignore_errors=True)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
