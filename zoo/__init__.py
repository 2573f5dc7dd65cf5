"""Known public Torch7 models by name: ``--model starry`` instead of a path.

    from zoo import resolve_model
    path = resolve_model("starry")       # a local file, verified by its sha256

The catalogue (:mod:`zoo.catalogue`) holds each model's source repository and path, sha256,
license and family; :mod:`zoo.locate` finds the file (bundled, cached, in a folder you name, in
../shared/realmodels) or downloads it on first use, checksum verified, written atomically.
"""

from zoo.catalogue import CATALOGUE, ModelEntry, entry_named
from zoo.locate import resolve_model, search_folders

__all__ = ["CATALOGUE", "ModelEntry", "entry_named", "resolve_model", "search_folders"]
