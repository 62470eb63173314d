"""``litegate models add|list|update|activate|rollback|remove|example``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from litegate.cli.common import actor, print_json, print_table, transaction
from litegate.cli.progress import mode as progress_mode
from litegate.cli.progress import progress_for
from litegate.errors import BadRequest
from litegate.inference.examples import EXAMPLES
from litegate.services.models import ModelService, model_dict
from litegate.settings import Settings


def _service(session: Any, settings: Settings) -> ModelService:
    return ModelService(session, settings.models_dir, settings)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("models", help="local ONNX models and their versions")
    s = p.add_subparsers(dest="models_command", required=True)

    a = s.add_parser("add", help="validate, copy and register an ONNX file as a new version")
    a.add_argument("name")
    a.add_argument("path", type=Path)
    a.add_argument("--version", help="version label (default: next integer)")
    a.add_argument("--activate", action="store_true",
                   help="serve this version now (the first version is always activated)")
    a.add_argument("--max-batch", type=int, dest="max_batch",
                   help="dynamic batching: max rows per session.run; off unless > 1, and only "
                        "for models whose first dimension is a batch (rows independent)")
    a.add_argument("--max-queue-delay-ms", type=float, dest="max_queue_delay_ms",
                   help="dynamic batching: how long a request may wait for a batch")
    a.add_argument("--hot", action="store_true", default=None,
                   help="load and warm at start-up; /readyz waits for it")
    a.add_argument("--warmup-sample", type=Path, dest="warmup_sample", metavar="FILE.npz",
                   help="warm up on these inputs (numpy.savez, one array per input) instead of "
                        "zeros with 1 for every dynamic dimension")
    a.add_argument("--tokenizer",
                   help="tokenizer.json for /v1/embeddings (or builtin:minilm)")
    a.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="serving option (repeatable): instances, providers, intra_op_threads, "
                        "inter_op_threads, graph_optimization, cpu_arena, max_queue, "
                        "memory_bytes, max_length, warmup_runs ...; VALUE is JSON or a string")
    a.add_argument("--quantize", choices=["int8"],
                   help="register an INT8-quantized copy of PATH as this version (ONNX Runtime "
                        "dynamic quantization; static with --calibration) and print a report: "
                        "size, loaded memory, latency, accuracy against the fp32 model")
    a.add_argument("--calibration", type=Path, metavar="FILE.npz",
                   help="--quantize: static quantization calibrated on these inputs "
                        "(numpy.savez, one array per input, rows along the first dimension); "
                        "accuracy is measured on them too")
    a.add_argument("--max-error", type=float, dest="max_error", metavar="X",
                   help="--quantize: refuse the version if the max abs error against the fp32 "
                        "model exceeds X")
    a.add_argument("--min-cosine", type=float, dest="min_cosine", metavar="Y",
                   help="--quantize: refuse the version if the cosine similarity of any output "
                        "row to the fp32 model's is below Y")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_add)

    up = s.add_parser("update", help="change a model's batching or hot setting")
    up.add_argument("name")
    up.add_argument("--max-batch", type=int, dest="max_batch",
                    help="max rows per session.run; 0 turns batching off")
    up.add_argument("--max-queue-delay-ms", type=float, dest="max_queue_delay_ms")
    hot = up.add_mutually_exclusive_group()
    hot.add_argument("--hot", action="store_true", default=None)
    hot.add_argument("--cold", action="store_false", dest="hot")
    up.set_defaults(func=_update)

    ex = s.add_parser("example", help="write a small real ONNX model to try the server with")
    ex.add_argument("kind", choices=sorted(EXAMPLES), help="mlp: x FP32 [-1,256] -> y [-1,16]")
    ex.add_argument("path", type=Path)
    ex.set_defaults(func=_example)

    ls = s.add_parser("list", help="models, versions and which one is active")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    act = s.add_parser("activate", help="serve another version (instant, no restart)")
    act.add_argument("name")
    act.add_argument("version")
    act.set_defaults(func=_activate)

    rb = s.add_parser("rollback", help="re-activate the previously active version")
    rb.add_argument("name")
    rb.set_defaults(func=_rollback)

    rm = s.add_parser("remove", help="delete an inactive version and its file")
    rm.add_argument("name")
    rm.add_argument("version")
    rm.set_defaults(func=_remove)


def parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option: expected KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


async def _add(args: argparse.Namespace, settings: Settings) -> int:
    options = parse_options(args.option)
    if args.tokenizer:
        options["tokenizer"] = args.tokenizer
    if not args.quantize:
        given = [f for f, v in (("--calibration", args.calibration),
                                ("--max-error", args.max_error),
                                ("--min-cosine", args.min_cosine)) if v is not None]
        if given:
            raise BadRequest(f"{given[0]} only applies with --quantize int8")
    report: dict[str, Any] | None = None
    common: dict[str, Any] = {
        "actor": actor(), "version": args.version, "activate": args.activate,
        "max_batch_size": args.max_batch, "max_queue_delay_ms": args.max_queue_delay_ms,
        "hot": args.hot, "options": options or None, "warmup_sample": args.warmup_sample}
    # Progress goes to stderr, so stdout holds only the result (one JSON document with --json).
    with progress_for(progress_mode(args.json)) as progress:
        async with transaction(settings) as session:
            if args.quantize:
                mv, report = await _service(session, settings).add_quantized(
                    args.name, args.path, quantize=args.quantize, calibration=args.calibration,
                    max_error=args.max_error, min_cosine=args.min_cosine, progress=progress,
                    **common)
            else:
                mv = await _service(session, settings).add(args.name, args.path,
                                                           progress=progress, **common)
            model = await _service(session, settings).get(args.name)
            active = model.active_version
    if args.json:
        print_json({"name": args.name, "version": mv.version, "sha256": mv.sha256,
                    "active_version": active, "signature": mv.signature}
                   | ({"quantization": report} if report is not None else {}))
    else:
        if report is not None:
            from litegate.inference.quantize import format_report

            print("\n".join(format_report(report)))
        inputs = ", ".join(f"{t['name']}:{t['datatype']}{t['shape']}"
                           for t in mv.signature.get("inputs", []))
        print(f"added {args.name} version {mv.version} (sha256 {mv.sha256[:12]}, inputs {inputs})"
              f"; active version: {active}")
    return 0


async def _update(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        model = await _service(session, settings).update(
            args.name, actor=actor(), max_batch_size=args.max_batch,
            max_queue_delay_ms=args.max_queue_delay_ms, hot=args.hot)
        batch, hot = model.max_batch_size, model.hot
    print(f"{args.name}: max_batch {batch}" + (" (batching off)" if batch <= 1 else "")
          + f", hot {'yes' if hot else 'no'}")
    return 0


def _example(args: argparse.Namespace, settings: Settings) -> int:
    EXAMPLES[args.kind](args.path)
    print(f"wrote {args.path} ({args.kind})")
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        rows = [model_dict(m) for m in await _service(session, settings).list()]
    if args.json:
        print_json(rows)
        return 0
    table = []
    for m in rows:
        for v in m["versions"]:
            table.append({
                "name": m["name"],
                "version": v["version"],
                "active": "*" if v["version"] == m["active_version"] else "",
                "hot": "yes" if m["hot"] else "",
                "max_batch": m["max_batch_size"],
                "size": v["size_bytes"],
                "sha256": v["sha256"][:12],
            })
    print_table(table, ["name", "version", "active", "hot", "max_batch", "size", "sha256"])
    return 0


async def _activate(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        await _service(session, settings).activate(
            args.name, args.version, actor=actor())
    print(f"{args.name}: version {args.version} is active")
    return 0


async def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        model = await _service(session, settings).rollback(args.name, actor=actor())
        version = model.active_version
    print(f"{args.name}: rolled back to version {version}")
    return 0


async def _remove(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        await _service(session, settings).remove(
            args.name, args.version, actor=actor())
    print(f"{args.name}: version {args.version} removed")
    return 0
