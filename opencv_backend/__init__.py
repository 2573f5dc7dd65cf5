"""OpenCV backend for texture-nets-parity: ``cv2.dnn.readNetFromTorch`` judged against Torch7, as a plug-in.

Registered only through the ``texture_nets.backends`` entry-point group (pyproject.toml:
``opencv = "opencv_backend:OpenCVBackend"``, extra ``opencv``), like the ``onnx`` plug-in. It reads
the .t7 with OpenCV 4.x's own Torch importer and runs OpenCV's own layers; the few classes OpenCV
lacks get minimal custom layers, and every Lua path they (or any rewrite of the model) compute is
listed in ``runner.adapter_paths``. ``opencv_backend:patched`` is the same backend running texture_nets
v1 files through an adapter-rewritten copy (their batch norms' aliased parameters made explicit);
plain ``opencv`` refuses those files. Findings: docs/ports/opencv.md.

cv2 is imported only when a backend loads a model, so listing backends never imports OpenCV.
"""

from opencv_backend.backend import OpenCVBackend, OpenCVRunner, patched

__all__ = ["OpenCVBackend", "OpenCVRunner", "patched"]
