"""ONNX Runtime backend for texture-nets-parity, packaged as a third-party plug-in would be.

It is registered only through the ``texture_nets.backends`` entry-point group (pyproject.toml:
``onnx = "ort_backend:OnnxRuntimeBackend"``), never in harness/core/registry.py, so it proves that
the plug-in path works end to end: ``pytest parity_tests --backend onnx`` and
``texture-nets drift --backends onnx`` find it the way they would find anyone's port.
"""

from ort_backend.backend import OnnxRuntimeBackend, OnnxRuntimeRunner

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeRunner"]
