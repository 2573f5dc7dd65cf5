"""Known public models by name (zoo/): found locally, checked by sha256, downloaded atomically, one line when not."""

from __future__ import annotations

import hashlib
import io

import pytest

from fileio.errors import UserError
from parity_tests.ground_truth import REAL_MODELS_DIR
from texture_nets.cli import main
from zoo import CATALOGUE, resolve_model
from zoo import locate as locate_module


@pytest.fixture
def empty_places(tmp_path, monkeypatch):
    """No bundled copies, an empty cache and no shared folder: only what a test puts there."""
    monkeypatch.setenv("TEXTURE_NETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TEXTURE_NETS_MODELS", raising=False)
    monkeypatch.setattr(locate_module, "BUNDLED_DIR", tmp_path / "bundled")
    monkeypatch.setattr(locate_module, "SHARED_MODELS_DIR", tmp_path / "shared")
    return tmp_path


def test_every_entry_is_complete():
    for entry in CATALOGUE.values():
        assert len(entry.sha256) == 64 and entry.url.startswith("https://raw.githubusercontent.com/")
        assert len(entry.commit) == 40 and entry.family in {"v1-style", "v1-texture", "demos", "doodle"}
        assert entry.license


def test_bundled_models_match_their_checksums():
    for name in ("starry", "pebble"):
        path = resolve_model(name, download=False)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == CATALOGUE[name].sha256
        assert path.parent.name == "models" and (path.parent / "LICENSE-texture_nets.txt").exists()


def test_a_path_is_taken_as_is_and_an_unknown_name_is_one_line(tmp_path):
    model = tmp_path / "mine.t7"
    model.write_bytes(b"x")
    assert resolve_model(str(model)) == model
    with pytest.raises(UserError, match=r"unknown model .nosuch.*starry"):
        resolve_model("nosuch")
    with pytest.raises(UserError, match="no such file"):
        resolve_model(str(tmp_path / "missing.t7"))


def test_a_folder_named_by_the_environment_is_searched_and_a_wrong_copy_skipped(empty_places, monkeypatch):
    entry = CATALOGUE["mosaic"]
    wrong, right = empty_places / "wrong", empty_places / "right"
    wrong.mkdir()
    right.mkdir()
    (wrong / entry.file_name).write_bytes(b"not the model")
    monkeypatch.setenv("TEXTURE_NETS_MODELS", f"{wrong}:{right}")
    with pytest.raises(UserError, match="downloads are off"):
        resolve_model("mosaic", download=False)
    shared = REAL_MODELS_DIR / entry.file_name
    if not shared.exists():
        pytest.skip("no ../shared/realmodels to copy the real file from")
    (right / entry.file_name).write_bytes(shared.read_bytes())
    assert resolve_model("mosaic", download=False) == right / entry.file_name


def test_download_is_checked_and_atomic(empty_places, monkeypatch):
    entry = CATALOGUE["turner"]
    payload = {"data": b"tampered"}

    def fake_urlopen(url, timeout):
        assert url == entry.url
        return io.BytesIO(payload["data"])

    monkeypatch.setattr(locate_module.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(UserError, match=r"has sha256 .* expected"):
        resolve_model("turner")
    assert not list((empty_places / "cache").glob("*")), "a rejected download must leave nothing behind"
    real = REAL_MODELS_DIR / entry.file_name
    if not real.exists():
        pytest.skip("no ../shared/realmodels to serve the real bytes from")
    payload["data"] = real.read_bytes()
    path = resolve_model("turner")
    assert path == empty_places / "cache" / entry.file_name and path.read_bytes() == payload["data"]


def test_offline_names_the_url_and_the_folders(empty_places, monkeypatch):
    def offline(url, timeout):
        raise locate_module.urllib.error.URLError("no network")

    monkeypatch.setattr(locate_module.urllib.request, "urlopen", offline)
    with pytest.raises(UserError) as raised:
        resolve_model("pollock")
    message = str(raised.value)
    assert "\n" not in message and CATALOGUE["pollock"].url in message and "TEXTURE_NETS_MODELS" in message


def test_models_command_lists_every_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CATALOGUE) and "Apache-2.0" in out
