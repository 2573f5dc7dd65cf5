"""Finding a model file: a path, or a catalogue name looked up locally, then downloaded on first use.

Search order for a name (``texture-nets models`` prints it):
1. the copy bundled in fixtures/models (only models whose license allows shipping them);
2. the cache, ``$TEXTURE_NETS_CACHE`` or ``~/.cache/texture-nets/models``;
3. the folders in ``$TEXTURE_NETS_MODELS`` (``os.pathsep``-separated), then ../shared/realmodels;
4. a download from the model's source repository into the cache, where the machine has internet.
Every file found or downloaded is checked against the catalogue's sha256 before it is used; a
download is written atomically, so an interrupted one leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from fileio.atomic import atomic_write_bytes
from fileio.errors import UserError
from zoo.catalogue import CATALOGUE, ModelEntry, entry_named

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "models"
SHARED_MODELS_DIR = Path(os.environ.get("TEXTURE_NETS_SHARED", Path(__file__).resolve().parents[2] / "shared")) \
    / "realmodels"
DOWNLOAD_TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 64 << 20  # the largest public model is 3 MB


def cache_dir() -> Path:
    override = os.environ.get("TEXTURE_NETS_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "texture-nets" / "models"


def search_folders() -> list[Path]:
    """Where names are looked up, in order (the cache first, after the bundled copies)."""
    folders = [cache_dir()]
    folders += [Path(folder) for folder in os.environ.get("TEXTURE_NETS_MODELS", "").split(os.pathsep) if folder]
    folders.append(SHARED_MODELS_DIR)
    return folders


def resolve_model(spec: str | Path, *, download: bool = True) -> Path:
    """A path to the model ``spec`` names: an existing file as is, else a catalogue name (see module docstring).

    Raises UserError naming where it looked when the name is unknown or the file cannot be had."""
    path = Path(spec)
    if path.exists():
        return path
    entry = entry_named(str(spec))
    if entry is None:
        if path.suffix or os.sep in str(spec):
            raise UserError(f"{spec}: no such file")
        raise UserError(f"unknown model '{spec}': not a file, and not a known model name "
                        f"({', '.join(CATALOGUE)}; `texture-nets models` lists them)")
    found = find_local(entry)
    if found is not None:
        return found
    if not download:
        raise UserError(_not_found(entry, "downloads are off"))
    return _download(entry)


def find_local(entry: ModelEntry) -> Path | None:
    """The first local copy whose checksum matches (a mismatching copy is skipped, not trusted)."""
    candidates = []
    if entry.bundled:
        candidates.append(BUNDLED_DIR / entry.bundled)
    candidates += [folder / entry.file_name for folder in search_folders()]
    for candidate in candidates:
        if candidate.is_file() and sha256_of(candidate) == entry.sha256:
            return candidate
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(entry: ModelEntry) -> Path:
    destination = cache_dir() / entry.file_name
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the model cache {destination.parent}: {error.strerror or error}") from None
    try:
        with urllib.request.urlopen(entry.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise UserError(_not_found(entry, f"the download failed ({reason})")) from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise UserError(f"model '{entry.name}': the download from {entry.url} is larger than {MAX_DOWNLOAD_BYTES} "
                        "bytes; refusing it")
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.sha256:
        raise UserError(f"model '{entry.name}': the file downloaded from {entry.url} has sha256 {actual}, expected "
                        f"{entry.sha256}; not using it")
    return atomic_write_bytes(destination, data)


def _not_found(entry: ModelEntry, why: str) -> str:
    places = ", ".join(str(folder) for folder in search_folders())
    return (f"model '{entry.name}' is not on this machine and {why}; download {entry.url} "
            f"(sha256 {entry.sha256[:12]}...) into one of: {places} (or set TEXTURE_NETS_MODELS to its folder)")
