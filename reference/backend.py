"""The reference backend for the harness (protocol in contract/protocol.py): pure NumPy, the judge."""

from __future__ import annotations

from pathlib import Path

from reference.network import DTYPES, SUPPORTED_CLASSES, Network, load_network
from t7file import T7Module


class ReferenceBackend:
    """``get_backend("reference")``: loads a .t7 path or a T7Module into a :class:`reference.Network` runner."""

    name = "reference"
    dtypes: tuple[str, ...] = DTYPES
    framework = "numpy"
    supported_classes = frozenset(SUPPORTED_CLASSES)

    def load(self, model: str | Path | T7Module, dtype: str, *, batchnorm: str | None = None) -> Network:
        """``batchnorm``: "train" (batch statistics) or "evaluate" (running statistics); None: the model
        family's convention (contract.families.batchnorm_mode)."""
        return load_network(model, dtype, batchnorm)
