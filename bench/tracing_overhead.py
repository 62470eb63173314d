"""What tracing costs per request: ``LITEGATE_TRACING=off`` against ``otlp``, same process
setup, interleaved rounds.

Each round runs one child process per mode. The child builds the real standalone app
(``create_app``) for a temporary home (route ``chat`` -> ``bench/mock_upstream.py`` in its
own process, one key; auth + limits + metrics on, cache off, access log off), starts the
gateway and drives ``POST /v1/chat/completions`` straight into the ASGI app (no HTTP
server, so the gateway's own work is most of what is measured) with ``--concurrency``
requests in flight. ``otlp`` exports through the real OTLP/HTTP exporter
(``BatchSpanProcessor``) to a sink process that accepts and drops the batches, so the
export thread's encoding is counted too; ``otlp-1%`` is the same with head sampling at
1 % (``OTEL_TRACES_SAMPLER=parentbased_traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.01``).

Reported per mode: CPU µs per request (the child's user+system time, all threads, over the
measured requests: the number that does not depend on how busy the machine is), wall µs
per request, whether any ``opentelemetry`` module was imported, and the layers of the built
policy stack (off must be exactly the untraced stack).

Run: ``.venv/bin/python bench/tracing_overhead.py [--requests 3000] [--rounds 4]
[--concurrency 8] [--no-append]``; the table is appended to ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
MODES = ("off", "otlp", "otlp-1%")
"""``otlp-1%``: ``otlp`` with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` at 0.01."""
CHAT = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hello"}]}).encode()


# ----------------------------------------------------------------------------- sink

def run_sink() -> None:
    """An OTLP/HTTP collector that accepts every batch and keeps nothing."""
    from aiohttp import web

    batches = 0

    async def accept(request: web.Request) -> web.Response:
        nonlocal batches
        await request.read()
        batches += 1
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def main() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", accept)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(f"READY {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ----------------------------------------------------------------------------- child

def _layers(app: object) -> list[str]:
    names = []
    while app is not None and len(names) < 32:
        names.append(type(app).__name__)
        app = getattr(app, "app", None)
    return names


async def _drive(app, requests: int, concurrency: int, key: str) -> tuple[float, float, dict[int, int]]:
    headers = [(b"host", b"bench"), (b"content-type", b"application/json"),
               (b"content-length", str(len(CHAT)).encode()),
               (b"authorization", f"Bearer {key}".encode())]
    statuses: dict[int, int] = {}
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def one() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
                 "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}
        sent = False
        status = 0

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": CHAT, "more_body": False}
            await never
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        statuses[status] = statuses.get(status, 0) + 1

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    async def batch(total: int) -> None:
        share = [total // concurrency + (i < total % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(worker(n) for n in share))

    await batch(min(500, requests))  # warm-up: connections, caches, JIT-free but lazy imports
    statuses.clear()
    c0, t0 = time.process_time(), time.perf_counter()
    await batch(requests)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return cpu, wall, statuses


def run_child(mode: str, home: str, key: str, requests: int, concurrency: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from litegate.app import create_app
    from litegate.log_config import configure_logging
    from litegate.settings import Settings

    if mode == "otlp-1%":
        os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0.01"
    options = {} if "@" in mode else {"tracing": mode.split("-")[0]}  # @ref: maybe pre-tracing
    settings = Settings.load(home=home, access_log=False, log_level="warning", **options)
    configure_logging("json", "warning")
    app = create_app(settings)
    gateway = app.gateway

    async def main() -> tuple[float, float, dict[int, int]]:
        await gateway.start()
        try:
            return await _drive(app, requests, concurrency, key)
        finally:
            await gateway.stop()

    cpu, wall, statuses = asyncio.run(main())
    if getattr(gateway, "tracing", None) is not None:
        gateway.tracing.shutdown()  # flush: the sink must have received the spans
    print(json.dumps({
        "mode": mode, "cpu_us": cpu / requests * 1e6, "wall_us": wall / requests * 1e6,
        "statuses": statuses,
        "otel_imported": any(m.startswith("opentelemetry") for m in sys.modules),
        "layers": _layers(gateway.build_stack(lambda s, r, se: None)),  # type: ignore[arg-type]
    }), flush=True)


# ----------------------------------------------------------------------------- parent

def _spawn_ready(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"{argv[1]} did not start: {line!r}")
    return proc, int(line.split()[1])


def _litegate(home: Path, *argv: str) -> str:
    exe = Path(sys.executable).parent / "litegate"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITEGATE_", "OTEL_"))}
    env["LITEGATE_HOME"] = str(home)
    out = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env, timeout=120,
                         check=True)
    return out.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000, help="measured requests per run")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds (one run per mode)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--no-append", action="store_true", help="print the table only")
    p.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--refs", default="",
                   help="comma-separated commits also run as 'off@REF' (git archive on "
                        "PYTHONPATH): e.g. the gateway before tracing existed and the commit "
                        "that added it, beside this checkout's 'off'")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--home", help=argparse.SUPPRESS)
    p.add_argument("--key", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sink:
        run_sink()
        return 0
    if args.child:
        run_child(args.child, args.home, args.key, args.requests, args.concurrency)
        return 0

    cmdline = shlex.join([".venv/bin/python", "bench/tracing_overhead.py",
                          *(sys.argv[1:] if argv is None else argv)])
    procs: list[subprocess.Popen[str]] = []
    try:
        mock, mock_port = _spawn_ready([sys.executable, str(BENCH / "mock_upstream.py"),
                                        "--host", "127.0.0.1", "--port", "0"])
        procs.append(mock)
        sink, sink_port = _spawn_ready([sys.executable, __file__, "--sink"])
        procs.append(sink)
        with tempfile.TemporaryDirectory(prefix="tracing-bench-") as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            config = Path(tmp) / "config.yaml"
            config.write_text(json.dumps({
                "upstreams": [{"name": "mock", "kind": "openai",
                               "base_url": f"http://127.0.0.1:{mock_port}/v1", "timeout_s": 10}],
                "routes": [{"name": "chat", "variants": [{"upstream": "mock",
                                                          "model": "small-model", "weight": 100}]}],
            }))
            _litegate(home, "db", "upgrade")
            _litegate(home, "config", "apply", str(config))
            key = json.loads(_litegate(home, "keys", "create", "--name", "bench",
                                       "--limit", "100000000/minute", "--json"))["key"]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("LITEGATE_", "OTEL_"))}
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
            refs = [r.strip() for r in args.refs.split(",") if r.strip()]
            modes = (*(f"off@{ref}" for ref in refs), *MODES)
            sources: dict[str, Path] = {}
            for ref in refs:
                source = sources[f"off@{ref}"] = Path(tmp) / f"src-{ref}"
                source.mkdir()
                archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref],
                                         capture_output=True, check=True).stdout
                subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
                for sub in ("admin", "migrations"):  # where the installed package puts them
                    (source / "litegate" / sub).symlink_to(source / sub)
            runs: dict[str, list[dict]] = {m: [] for m in modes}
            for r in range(args.rounds):
                for mode in (modes if r % 2 == 0 else modes[::-1]):  # alternate the order
                    child_env = dict(env)
                    if mode in sources:
                        child_env["PYTHONPATH"] = str(sources[mode])  # ahead of the editable install
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", mode, "--home", str(home),
                         "--key", key, "--requests", str(args.requests),
                         "--concurrency", str(args.concurrency)],
                        capture_output=True, text=True, env=child_env, timeout=600, cwd=tmp)
                    if out.returncode != 0:
                        raise RuntimeError(f"{mode} run failed:\n{out.stderr[-3000:]}")
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                    if set(res["statuses"]) != {"200"}:
                        raise RuntimeError(f"{mode}: non-200 answers {res['statuses']}")
                    runs[mode].append(res)
                    print(f"round {r + 1} {mode:12}: {res['cpu_us']:7.1f} CPU µs/req "
                          f"{res['wall_us']:7.1f} wall µs/req", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    med = {m: (statistics.median(r["cpu_us"] for r in runs[m]),
               statistics.median(r["wall_us"] for r in runs[m])) for m in modes}
    lines = [
        "",
        f"## Tracing overhead (issue 11, item 3) — "
        f"{dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        f"`{cmdline}` — {args.rounds} interleaved rounds of {args.requests} requests, "
        f"{args.concurrency} in flight, straight into the ASGI app; load average after: {load}",
        "",
        "| LITEGATE_TRACING | CPU µs/request per round | median CPU µs/request | median wall µs/request | opentelemetry imported | policy stack |",
        "|---|---|---|---|---|---|",
    ]
    for m in modes:
        per = ", ".join(f"{r['cpu_us']:.0f}" for r in runs[m])
        layers = " → ".join(runs[m][0]["layers"])
        lines.append(f"| {m} | {per} | {med[m][0]:.0f} | {med[m][1]:.0f} | "
                     f"{'yes' if runs[m][0]['otel_imported'] else 'no'} | {layers} |")
    lines.append("")
    for m in modes:
        if m == "off":
            continue
        lines.append(f"- {m} − off: **{med[m][0] - med['off'][0]:+.0f} CPU µs/request** "
                     f"({(med[m][0] / med['off'][0] - 1) * 100:+.0f} %)")
    lines.append("")
    table = "\n".join(lines)
    print(table)
    if not args.no_append:
        with RESULTS.open("a") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
