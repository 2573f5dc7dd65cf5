"""The reference backend for the harness (protocol in contract/protocol.py): pure NumPy, the judge."""

from __future__ import annotations

from pathlib import Path

from reference.network import DTYPES, Network, load_network
from t7file import T7Module


class ReferenceBackend:
    """``get_backend("reference")``: loads a .t7 path or a T7Module into a :class:`reference.Network` runner."""

    name = "reference"
    dtypes: tuple[str, ...] = DTYPES
    framework = "numpy"

    def load(self, model: str | Path | T7Module, dtype: str) -> Network:
        return load_network(model, dtype)
