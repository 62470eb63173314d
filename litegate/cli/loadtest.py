"""``litegate loadtest``: the design's JMeter scenario (100 connections, 10 s ramp-up,
1,000 loops) as one command against a running gateway. A rich progress bar on a
terminal, a plain line every second otherwise, nothing but the report with --json."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from litegate.faults import OperationalFault
from litegate.ops.loadgen import Plan, Results, headers_for, run, send_one, session_for
from litegate.settings import Settings

PLAIN_EVERY_S = 1.0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("loadtest", help="load-test a running gateway (RPS, p50/p95/p99, errors)")
    p.add_argument("--url", required=True, help="gateway base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--key", required=True, help="API key sent as Authorization: Bearer")
    p.add_argument("--route", required=True, help="route name sent as 'model'")
    p.add_argument("--connections", type=int, default=100, help="concurrent keep-alive connections")
    p.add_argument("--ramp-up", type=float, default=0.0, dest="ramp_up",
                   help="seconds over which the connections start (linearly)")
    stop = p.add_mutually_exclusive_group(required=True)
    stop.add_argument("--duration", type=float, help="seconds to run, ramp-up included")
    stop.add_argument("--loops", type=int, help="requests per connection")
    p.add_argument("--stream", action="store_true", help="ask for SSE streams (reads to the end)")
    p.add_argument("--prompt", default="ping", help="user message content")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--json", action="store_true", help="print only the final report, as JSON")
    p.set_defaults(func=_loadtest)


def plan_from_args(args: argparse.Namespace) -> Plan:
    if not args.url.startswith(("http://", "https://")):
        raise ValueError(f"--url: expected http:// or https://, got {args.url!r}")
    if not 1 <= args.connections <= 10_000:
        raise ValueError("--connections: must be between 1 and 10000")
    if args.ramp_up < 0 or args.timeout <= 0:
        raise ValueError("--ramp-up must be >= 0 and --timeout > 0")
    if args.duration is not None and args.duration <= 0:
        raise ValueError("--duration: must be > 0")
    if args.loops is not None and args.loops < 1:
        raise ValueError("--loops: must be >= 1")
    return Plan(url=args.url, key=args.key, route=args.route, connections=args.connections,
                ramp_up_s=args.ramp_up, duration_s=args.duration, loops=args.loops,
                stream=args.stream, prompt=args.prompt, timeout_s=args.timeout)


async def preflight(plan: Plan) -> None:
    """One request first, so a wrong URL, key or route is one line, not N errors."""
    probe = Results()
    async with session_for(plan) as session:
        outcome = await send_one(session, plan, plan.body(), headers_for(plan), probe)
    if outcome == "connect_error":
        raise OperationalFault(f"cannot connect to {plan.url}: start the gateway or correct --url")
    if outcome in ("401", "403"):
        raise OperationalFault(f"the gateway refused --key ({outcome}): create one with "
                               "`litegate keys create --name loadtest`")
    if outcome == "404":
        raise OperationalFault(f"route {plan.route!r} not found (404): list them with "
                               "`litegate routes list`")


def _summary(r: Results) -> str:
    rps = r.done / r.elapsed_s if r.elapsed_s > 0 else 0.0
    p99 = r.latency.percentile(99) * 1000
    return (f"{r.elapsed_s:6.1f}s  active {r.active:4d}  requests {r.done:7d}  rps {rps:8.1f}  "
            f"p99 {p99:8.2f} ms  errors {r.done - r.ok}")


async def _run_with_progress(plan: Plan, mode: str, stop: asyncio.Event) -> Results:
    if mode == "json":
        return await run(plan, stop=stop)
    if mode == "plain":
        return await run(plan, on_tick=lambda r: print(_summary(r), flush=True),
                         tick_s=PLAIN_EVERY_S, stop=stop)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = plan.duration_s if plan.duration_s is not None else plan.connections * (plan.loops or 0)
    with Progress(TextColumn("[bold]loadtest"), BarColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), transient=True) as bar:
        task = bar.add_task("", total=total)

        def tick(r: Results) -> None:
            done = r.elapsed_s if plan.duration_s is not None else r.done
            bar.update(task, completed=done, description=_summary(r))

        return await run(plan, on_tick=tick, tick_s=0.25, stop=stop)


def render(report: dict[str, Any]) -> str:
    stream = " (stream)" if report["stream"] else ""
    lines = [(f"route {report['route']}: {report['requests']} requests in "
              f"{report['duration_s']} s over {report['connections']} connections{stream}"),
             f"  throughput   {report['rps']} req/s ({report['ok']} ok)"]
    for label, name in (("latency", "latency_ms"), ("first byte", "first_byte_ms"),
                        ("gateway adds", "overhead_ms")):
        h = report[name]
        if h:
            lines.append(f"  {label:<12} p50 {h['p50']} ms  p95 {h['p95']} ms  p99 {h['p99']} ms"
                         f"  max {h['max']} ms")
    if report.get("interrupted"):
        lines.append("  interrupted  (Ctrl+C: the requests in flight were finished and counted)")
    if report["overhead_ms"] is None:
        lines.append("  gateway adds (no X-Litegate-Overhead-Ms header in the answers)")
    errors = report["errors"]
    lines.append("  errors       " + (", ".join(f"{k}: {n}" for k, n in errors.items())
                                      if errors else "none"))
    return "\n".join(lines)


async def _loadtest(args: argparse.Namespace, settings: Settings) -> int:
    plan = plan_from_args(args)
    await preflight(plan)
    mode = "json" if args.json else ("tty" if sys.stdout.isatty() else "plain")
    # Ctrl+C stops sending; the requests in flight finish and the report still prints.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        results = await _run_with_progress(plan, mode, stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    report = {**results.to_dict(plan), "interrupted": stop.is_set()}
    print(json.dumps(report, indent=2) if args.json else render(report))
    if stop.is_set():
        return 130
    return 0 if report["ok"] else 1
