"""The gRPC server: ``grpc.aio`` on the gateway's own event loop, on its own port.

Started and stopped by the gateway with its lifespan (``Gateway.start``/``stop``). The
largest message it accepts is the REST inference body bound (``max_infer_body_bytes``),
the largest it sends a little over the response bound (``max_infer_response_bytes``,
which the service checks itself to answer INVALID_ARGUMENT with a message).
"""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from tritonclient.grpc.service_pb2_grpc import add_GRPCInferenceServiceServicer_to_server

from litegate.faults import PortInUse
from litegate.grpc_api.service import InferenceService

log = structlog.get_logger("litegate.grpc")
_ENVELOPE = 64 * 1024
"""Room for the protobuf framing around the tensors in a sent message."""


class GrpcServer:
    def __init__(self, service: InferenceService, *, host: str, port: int,
                 max_receive_bytes: int, max_send_bytes: int, reuse_port: bool = False) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", max_send_bytes + _ENVELOPE),
            # Several worker processes share the port only when asked to (--workers N);
            # otherwise a busy port is an error, not a silent second listener.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server(options=self.options)
        add_GRPCInferenceServiceServicer_to_server(self.service, server)
        try:
            bound = server.add_insecure_port(self.address)
        except RuntimeError:
            bound = 0
        if not bound:
            await server.stop(None)
            raise PortInUse(
                f"cannot serve gRPC on {self.address}: the port is in use or not bindable; "
                "choose another with --grpc-port N (LITEGATE_GRPC_PORT)")
        await server.start()
        self._server = server
        log.info("grpc_started", address=self.address)

    async def stop(self, grace_s: float = 5.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace_s)
