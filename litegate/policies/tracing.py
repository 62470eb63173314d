"""Tracing with OpenTelemetry — optional (``pip install 'litegate[otel]'``), off by default.

``LITEGATE_TRACING`` (``Settings.tracing``) chooses where spans go:

* ``off`` (default): nothing. opentelemetry is never imported (this module imports it
  only inside ``start_tracing``), the policy stack is built without any tracing layer,
  and the upstream client's ``inject`` hook stays ``None``.
* ``otlp``: an SDK ``TracerProvider`` of litegate's own with a ``BatchSpanProcessor`` and
  the OTLP exporter, configured by the standard variables: ``OTEL_EXPORTER_OTLP_[TRACES_]
  ENDPOINT``, ``_HEADERS``, ``_TIMEOUT``, ``_COMPRESSION``, ``_PROTOCOL`` (``http/protobuf``
  by default; ``grpc`` needs ``opentelemetry-exporter-otlp-proto-grpc``),
  ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (service name ``litegate`` unless
  set), ``OTEL_TRACES_SAMPLER[_ARG]`` and ``OTEL_BSP_*``. ``OTEL_SDK_DISABLED=true`` wins.
* ``console``: the same provider printing spans to stdout (to try it out).
* ``global``: whatever provider the host process installed (``trace.set_tracer_provider``);
  for a gateway mounted into an application that already sets OpenTelemetry up.

Setting ``OTEL_EXPORTER_OTLP_ENDPOINT`` alone does not turn tracing on: that variable is
often set for a whole cluster, and tracing must stay an explicit, zero-cost choice.

The ASGI side (a server span per request, a span per policy) is
``litegate.middleware.tracing``; this module is what a handler may use without ASGI: the
tracer, and ``inject``, which puts the current span's W3C ``traceparent`` (and
``tracestate``/``baggage``, per ``OTEL_PROPAGATORS``) on an upstream request.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from litegate.faults import OperationalFault

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

MODES = ("off", "otlp", "console", "global")
INSTRUMENTATION = "litegate"

inject: Callable[[dict[str, str]], None] | None = None
"""Adds the current trace context to outgoing upstream headers; ``None`` until a gateway
starts tracing, so an untraced process pays one ``is None`` per upstream request. With
no span current (a gateway of this process without tracing) it adds nothing."""


class Tracing:
    """A tracer and, unless the host's provider is used, the provider that owns it."""

    __slots__ = ("provider", "tracer")

    def __init__(self, tracer: Tracer, provider: TracerProvider | None = None) -> None:
        self.tracer = tracer
        self.provider = provider

    def shutdown(self) -> None:
        """Export what is pending and stop (litegate's own provider only)."""
        if self.provider is not None:
            self.provider.shutdown()


def start_tracing(mode: str) -> Tracing | None:
    """The tracing of ``mode`` (``MODES``), or ``None`` when it is off; installs ``inject``.

    Raises ``ValueError`` for an unknown mode and ``OperationalFault`` (one line naming the
    fix) when the ``otel`` extra is not installed.
    """
    global inject
    if mode not in MODES:
        raise ValueError(f"unknown tracing mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "off" or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    try:
        from opentelemetry import propagate, trace
    except ImportError as exc:
        raise OperationalFault(
            f"LITEGATE_TRACING={mode} needs OpenTelemetry ({exc}): pip install 'litegate[otel]'"
        ) from exc
    if mode == "global":
        tracing = Tracing(trace.get_tracer(INSTRUMENTATION))
    else:
        tracing = _own_provider(_exporter(mode))
    inject = propagate.inject
    return tracing


def _own_provider(exporter: SpanExporter) -> Tracing:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "litegate"}))
    # The sampler comes from OTEL_TRACES_SAMPLER (default: parent-based, always on).
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider.get_tracer(INSTRUMENTATION), provider)


def _exporter(mode: str) -> SpanExporter:
    try:
        if mode == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            grpc_exporter: SpanExporter = GrpcExporter()  # not installed here: typed Any
            return grpc_exporter
        if protocol != "http/protobuf":
            raise OperationalFault(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: "
                "use http/protobuf (default) or grpc")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    except ImportError as exc:
        extra = ("pip install opentelemetry-exporter-otlp-proto-grpc"
                 if "grpc" in str(exc) else "pip install 'litegate[otel]'")
        raise OperationalFault(f"LITEGATE_TRACING={mode}: {exc}; {extra}") from exc
