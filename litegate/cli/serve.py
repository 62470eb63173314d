"""``litegate serve``: the standalone gateway under uvicorn (uvloop + httptools, with the
connection guard of ``litegate.connections``) or granian (``--server granian``: HTTP/2, h2c).
Both serve HTTPS with ``--certfile/--keyfile``; under granian ALPN offers ``h2`` then
``http/1.1``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import faulthandler
import http.client
import os
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

from litegate.db import migrate
from litegate.faults import EXIT_OPERATIONAL, OperationalFault, PortInUse
from litegate.log_config import configure_logging
from litegate.settings import ENV_PREFIX, Settings

SERVERS = ("uvicorn", "granian")

URL_FILE = "serve-url"
"""Under ``home``: the URL a running ``serve`` listens on (read by ``admin create-user``)."""


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--config", type=Path, help="YAML/TOML applied at start-up")
    p.add_argument("--demo", action="store_true", help="register a demo model, route and key")
    p.add_argument("--providers", help='ONNX Runtime providers, e.g. "cuda,cpu" (default: auto)')
    p.add_argument("--strict-providers", action="store_true", default=None,
                   help="fail instead of falling back to CPU when a requested provider is missing")
    p.add_argument("--model-memory-mb", type=int, dest="model_memory_mb",
                   help="memory budget for loaded models; least recently used idle ones are unloaded")
    p.add_argument("--devices",
                   help='CUDA device ids to place sessions on, least-loaded first, e.g. "0,1" '
                        "(LITEGATE_DEVICES; default 0)")
    p.add_argument("--gpu-memory-mb", type=int, dest="gpu_memory_mb",
                   help="memory budget per CUDA device (each session's gpu_mem_limit too); "
                        "least recently used idle sessions on it are unloaded "
                        "(LITEGATE_GPU_MEMORY_MB)")
    p.add_argument("--migrate", action="store_true",
                   help="apply migrations to a non-SQLite database before starting")
    p.add_argument("--server", choices=SERVERS,
                   help="ASGI server (default uvicorn; granian adds HTTP/2) (LITEGATE_SERVER)")
    p.add_argument("--certfile", type=Path,
                   help="PEM certificate: serve HTTPS (with --keyfile) (LITEGATE_CERTFILE)")
    p.add_argument("--keyfile", type=Path, help="PEM private key of --certfile (LITEGATE_KEYFILE)")
    p.add_argument("--grpc-port", type=int, dest="grpc_port",
                   help="also serve the gRPC Open Inference Protocol (tritonclient.grpc) on "
                        "this port; off by default, 8001 by Triton's convention "
                        "(LITEGATE_GRPC_PORT)")
    p.set_defaults(func=_serve)


def _export_env(settings: Settings) -> None:
    """Worker processes rebuild Settings from the environment."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        os.environ[ENV_PREFIX + f.name.upper()] = str(value)


def _tune_gc() -> None:
    """Startup objects (modules, ORM metadata, templates) live forever: freeze them so
    the collector stops rescanning them, and collect young objects less often — the
    hot path allocates many short-lived objects."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def app_from_env():  # type: ignore[no-untyped-def]
    from litegate.app import create_app

    settings = Settings.load()
    configure_logging(settings.log_format, settings.log_level, cache=True)
    faulthandler.enable()
    app = create_app(settings)
    if settings.server == "granian":  # uvicorn has the guard in its protocol instead
        from litegate.connections import BodyDeadline

        guarded = BodyDeadline(app, timeout_s=settings.body_timeout_s)
        _tune_gc()
        return guarded
    _tune_gc()
    return app


async def _prepare(settings: Settings) -> list[str]:
    """Apply ``--config`` and set up the demo; the lines for the start-up block."""
    if settings.config is not None:
        from litegate.cli.common import transaction  # the ORM: only when there is work for it
        from litegate.services import config as config_service

        doc = config_service.validate(config_service.load_file(settings.config))
        async with transaction(settings) as session:
            result = await config_service.apply_document(session, doc, actor="serve:--config")
        print(f"applied {settings.config} (config version {result['config_version']})", flush=True)
    if settings.demo:
        return await setup_demo(settings)
    return []


def local_command(name: str) -> str:
    """How to run this installation's ``python``/``litegate`` from the current shell:
    ``.venv/bin/python`` inside the checkout, an absolute path elsewhere."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        return name
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def setup_demo(settings: Settings) -> list[str]:
    """Demo model, route, key and console user (idempotent); the lines to print."""
    from litegate.cli.common import actor, transaction
    from litegate.demo import setup_demo_model
    from litegate.services import keys as key_service
    from litegate.services import users

    await setup_demo_model(settings)
    base = f"http://{settings.host}:{settings.port}"
    litegate, python = local_command("litegate"), local_command("python")
    async with transaction(settings) as session:
        existing = [k for k in await key_service.list_keys(session, include_revoked=False) if k.name == "demo"]
        secret = None
        if not existing:
            _key, secret = await key_service.create_key(
                session, name="demo", actor=actor(), limits=["600/minute"]
            )
    async with transaction(settings) as session:
        password = await users.ensure_demo_user(session)
    key = secret or "lg-..."
    console = f"{base}{settings.admin_path}   user admin   " + (
        f"password {password}  (shown once)" if password
        else f"(forgot the password? {litegate} admin set-password admin)")
    embed = "print(len(c.embeddings.create(model='minilm', input='hello').data[0].embedding))"
    return [
        f"API key (shown once):  {secret}" if secret
        else f"API key: shown on the first run; make another: {litegate} keys create --name me",
        f"Admin console:         {console}",
        "",
        "Try it from this directory, in another shell:",
        f"  curl -s {base}/v1/embeddings -H 'Authorization: Bearer {key}' \\",
        "       -H 'Content-Type: application/json' -d '{\"model\": \"minilm\", \"input\": \"hello\"}'",
        f"  {python} -c \"import openai; c = openai.OpenAI(base_url='{base}/v1', api_key='{key}'); {embed}\"",
        f"  {litegate} keys create --name me          # another API key",
        f"  {litegate} admin set-password admin       # reset the console password",
    ]


def _bind(host: str, port: int) -> socket.socket:
    """Bind before anything starts, so a busy port is one line and nothing else."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is already in use: stop the other process "
                            "or choose another with --port N (LITEGATE_PORT)") from None
        raise OperationalFault(f"cannot listen on {host}:{port} ({exc.strerror}): "
                               "choose another --host / --port") from None
    sock.set_inheritable(True)
    return sock


def _check_grpc_port(host: str, port: int) -> None:
    """The gRPC port is bound by the gateway at start-up; prove it free first, so a busy
    port is one line here rather than a failed start-up later."""
    try:
        _bind(host, port).close()
    except PortInUse:
        raise PortInUse(f"gRPC port {port} on {host} is already in use: stop the other "
                        "process or choose another with --grpc-port N (LITEGATE_GRPC_PORT)"
                        ) from None


def _announce(url: str, lines: list[str]) -> str:
    width = max(len(line) for line in [url, *lines]) + 4
    rule = "  " + "-" * min(width, 100)
    body = [f"  litegate is serving on {url}", *(f"    {line}" if line else "" for line in lines),
            "  Stop it with Ctrl+C."]
    return "\n".join(["", rule, *body, rule, ""])


def _print_when_started(server: object, text: str, url_file: Path, url: str) -> None:
    """uvicorn has no started hook: a watcher thread prints once it is really serving."""
    def watch() -> None:
        while not getattr(server, "started", False):
            if getattr(server, "should_exit", False):
                return
            time.sleep(0.02)
        url_file.write_text(url + "\n")
        print(text, flush=True)

    threading.Thread(target=watch, name="litegate-announce", daemon=True).start()


class TLSFault(OperationalFault):
    pass


def check_tls(settings: Settings) -> None:
    """Load the certificate and key once before anything starts, so a missing,
    unreadable or mismatched file is one line naming the fix (not a server traceback)."""
    cert, key = settings.certfile, settings.keyfile
    if cert is None and key is None:
        return
    if cert is None or key is None:
        raise TLSFault("HTTPS needs both --certfile and --keyfile "
                       "(LITEGATE_CERTFILE / LITEGATE_KEYFILE): give the missing one")
    for flag, path in (("--certfile", cert), ("--keyfile", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise TLSFault(f"cannot read {flag} {path} ({exc.strerror}): check the path "
                           "and that this user may read it") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TLSFault(f"the key {key} does not match the certificate {cert}: "
                           "give --keyfile the private key of --certfile") from None
        raise TLSFault(f"cannot load the certificate {cert} with the key {key} "
                       f"({exc.reason or exc}): give PEM files (an unencrypted key)") from None


async def _check_database(settings: Settings) -> None:
    from litegate.db.engine import make_engine

    engine = make_engine(settings.db_url, timeout_s=settings.db_timeout_s)
    try:
        await migrate.check_schema(engine, settings.db_url)
    finally:
        await engine.dispose()


def check_devices(settings: Settings) -> None:
    """A bad ``--devices`` list is one line at start-up, not a 503 per model later."""
    from litegate.inference.placement import PlacementError, parse_devices

    try:
        parse_devices(settings.devices)
    except PlacementError as exc:
        raise OperationalFault(f"{exc} (--devices / LITEGATE_DEVICES)") from exc


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    flags = {name: getattr(args, name, None) for name in ("server", "certfile", "keyfile")}
    settings = settings.replace(**{k: v for k, v in flags.items() if v is not None})
    if settings.server not in SERVERS:
        raise OperationalFault(f"unknown server {settings.server!r}: choose --server "
                               f"{' or '.join(SERVERS)} (LITEGATE_SERVER)")
    check_tls(settings)
    check_devices(settings)
    if getattr(args, "grpc_port", None) is not None:
        settings = settings.replace(grpc_port=args.grpc_port)
    configure_logging(settings.log_format, settings.log_level, cache=True)
    faulthandler.enable()  # a fatal signal (SIGSEGV, SIGBUS) still says where, on stderr
    settings.home.mkdir(parents=True, exist_ok=True)
    if args.migrate:
        migrate.upgrade(settings.db_url)
    elif settings.db_url.startswith("sqlite"):
        migrate.upgrade_if_needed(settings.db_url)
    else:
        asyncio.run(_check_database(settings))
    sock = _bind(settings.host, settings.port)
    if settings.grpc_port:
        _check_grpc_port(settings.host, settings.grpc_port)
    lines = asyncio.run(_prepare(settings))
    scheme = "https" if settings.certfile else "http"
    url = f"{scheme}://{settings.host}:{settings.port}"
    if settings.admin_enabled and not settings.demo:
        lines.append(f"Admin console: {url}{settings.admin_path}")
    if settings.grpc_port:
        lines.append(f"gRPC inference (tritonclient.grpc): {settings.host}:{settings.grpc_port}")
    if settings.server == "granian":
        return _serve_granian(settings, sock, url, lines)
    return _serve_uvicorn(settings, sock, url, lines)


def _serve_uvicorn(settings: Settings, sock: socket.socket, url: str, lines: list[str]) -> int:
    # connections first: it imports uvicorn without its --reload extras
    from litegate.connections import protocol_for  # noqa: I001
    import uvicorn

    if settings.certfile:
        lines.append("HTTP/1.1 over TLS (uvicorn has no HTTP/2: --server granian for h2)")
    common = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_for(settings),  # httptools plus read deadlines and a connection cap
        ws="none",  # the gateway serves no websockets
        server_header=False,  # do not advertise the server software
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        ssl_certfile=str(settings.certfile) if settings.certfile else None,
        ssl_keyfile=str(settings.keyfile) if settings.keyfile else None,
    )
    url_file = settings.home / URL_FILE
    try:  # uvicorn re-raises Ctrl+C once it has shut down
        if settings.workers > 1:
            if not settings.redis:
                # Each worker would count on its own: N workers would allow N x every quota.
                print(
                    "warning: --workers > 1 without --redis: limits, token quotas and the cache "
                    "are per worker process; use --redis redis://... for one global quota",
                    file=sys.stderr, flush=True,
                )
            _export_env(settings.replace(config=None, demo=False))
            sock.close()  # uvicorn's supervisor binds the port itself; ours proved it is free
            url_file.write_text(url + "\n")
            print(_announce(url, [f"{settings.workers} worker processes", *lines]), flush=True)
            uvicorn.run("litegate.cli.serve:app_from_env", factory=True,
                        workers=settings.workers, **common)
            return 0
        from litegate.app import create_app

        server = uvicorn.Server(uvicorn.Config(create_app(settings), **common))
        _tune_gc()
        _print_when_started(server, _announce(url, lines), url_file, url)
        server.run(sockets=[sock])
    finally:
        url_file.unlink(missing_ok=True)
    return 0 if server.started else EXIT_OPERATIONAL  # uvicorn logged why, in one line


def _serve_granian(settings: Settings, sock: socket.socket, url: str, lines: list[str]) -> int:
    """Granian (Rust, hyper): HTTP/1.1 and HTTP/2 on one port — ALPN over TLS, h2c with
    prior knowledge in cleartext. Its workers are processes that rebuild the app from the
    environment (like uvicorn's ``--workers``). Slow clients: granian's own
    ``header_read_timeout`` bounds a request head, ``BodyDeadline`` its body (408); HTTP/2
    bounds streams per connection. No cap on connections, none on silent ones."""
    from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
    from granian.http import HTTP1Settings, HTTP2Settings
    from granian.log import LogLevels
    from granian.server import Server

    if settings.workers > 1 and not settings.redis:
        print("warning: --workers > 1 without --redis: limits, token quotas and the cache "
              "are per worker process; use --redis redis://... for one global quota",
              file=sys.stderr, flush=True)
    _export_env(settings.replace(config=None, demo=False))
    sock.close()  # granian binds the port itself; ours proved it is free
    lines.append("HTTP/1.1 and HTTP/2 (" + ("ALPN h2, http/1.1" if settings.certfile
                                            else "h2c with prior knowledge") + "), granian")
    url_file = settings.home / URL_FILE
    announced = threading.Event()

    def watch() -> None:
        # granian has no started hook either: print once a request is really answered.
        context = ssl._create_unverified_context() if settings.certfile else None
        while True:
            try:
                conn = (http.client.HTTPSConnection(settings.host, settings.port, timeout=2,
                                                    context=context)
                        if context else http.client.HTTPConnection(settings.host, settings.port,
                                                                   timeout=2))
                try:
                    conn.request("GET", "/healthz")
                    conn.getresponse().read()
                finally:
                    conn.close()
                break
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)
        url_file.write_text(url + "\n")
        announced.set()
        print(_announce(url, lines), flush=True)

    class Granian(Server):  # type: ignore[misc, valid-type]
        def _spawn_workers(self, *args: object, **kwargs: object) -> None:
            super()._spawn_workers(*args, **kwargs)
            # Only once every worker is forked: a thread running (holding a lock) while
            # the process forks can leave the worker deadlocked on that lock.
            threading.Thread(target=watch, name="litegate-announce", daemon=True).start()

    server = Granian(
        "litegate.cli.serve:app_from_env",
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=max(1, settings.workers),
        loop=Loops.uvloop,
        http=HTTPModes.auto,
        websockets=False,
        factory=True,
        log_level=LogLevels.warning,
        log_access=False,
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_timeout_s * 1000)),
        http2_settings=HTTP2Settings(max_concurrent_streams=200),
        ssl_cert=settings.certfile.resolve() if settings.certfile else None,
        ssl_key=settings.keyfile.resolve() if settings.keyfile else None,
        ssl_protocol_min=SSLProtocols.tls12,
    )
    try:
        server.serve()
    except SystemExit as exc:
        return int(exc.code or 0) if announced.is_set() else EXIT_OPERATIONAL
    finally:
        url_file.unlink(missing_ok=True)
    return 0 if announced.is_set() else EXIT_OPERATIONAL
