"""gRPC Open Inference Protocol (the service ``tritonclient.grpc`` speaks) on its own
port, behind the same keys, scopes, limits, metrics and audit as ``/v2`` REST.

A handler-level package (docs/architecture.md): it uses the policy objects, the model
manager and the upstream client, never ASGI or the gateway; ``gateway.py`` composes it.
Named ``grpc_api`` so it never shadows the ``grpc`` package. It needs
``tritonclient[grpc]`` (the generated stubs) and ``grpcio``: ``pip install
'litegate[grpc]'``.
"""
