"""Local ONNX inference: sessions, lazy loading, dynamic batching and the v2 protocol.

Importing this package is cheap: ``onnxruntime`` is imported only when the first
model is validated or loaded (see :mod:`litegate.inference.session`).
"""
