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

    def load(self, model: str | Path | T7Module, dtype: str, *, batchnorm: str | None = None,
             conv_algorithm: str | None = None) -> Network:
        """``batchnorm``: "train" (batch statistics) or "evaluate" (running statistics); None: the model
        family's convention (contract.families.batchnorm_mode). ``conv_algorithm``: reference.network.Network's
        ("taps": the judge's second float32 summation order)."""
        return load_network(model, dtype, batchnorm, conv_algorithm=conv_algorithm)
