"""The catalogue of public texture_nets-era models: where each comes from, its checksum, license and family."""

from __future__ import annotations

from dataclasses import dataclass

_TEXTURE_NETS = "DmitryUlyanov/texture_nets"
_TEXTURE_NETS_COMMIT = "097df07ba469bdac50532933b8e3bed3586c316a"
_DEMOS = "szagoruyko/torch-opencv-demos"
_DEMOS_COMMIT = "6259146add2a2344be488c75f452171c4e9e0046"
_DOODLE = "DmitryUlyanov/online-neural-doodle"
_DOODLE_COMMIT = "9758d9c31ce6533f1a4acfa95ffad9f4495cf0fb"
_APACHE = "Apache-2.0 (texture_nets LICENSE)"
_NO_LICENSE = "none published (not redistributed here)"


@dataclass(frozen=True)
class ModelEntry:
    """One public model. ``file_name``: its name in ../shared/realmodels and in the cache; ``bundled``:
    the file under fixtures/models when its license allows shipping it; ``palette``: for the doodle
    net, the colours of its one-hot mask channels (RGB, 0-255, in channel order)."""

    name: str
    title: str
    family: str
    repository: str
    commit: str
    path: str
    sha256: str
    size: int
    license: str
    file_name: str
    bundled: str | None = None
    palette: tuple[tuple[float, float, float], ...] | None = None

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repository}/{self.commit}/{self.path}"

    @property
    def source(self) -> str:
        return f"{self.repository} @ {self.commit[:7]}: {self.path}"


def _v1(name: str, title: str, family: str, path: str, sha256: str, size: int,
        bundled: str | None = None) -> ModelEntry:
    """A texture_nets v1 model; its cache name is its file name prefixed with ``texture_nets_v1__``."""
    file_name = "texture_nets_v1__" + path.rsplit("/", 1)[-1]
    return ModelEntry(name, title, family, _TEXTURE_NETS, _TEXTURE_NETS_COMMIT, path, sha256, size, _APACHE,
                      file_name, bundled)


_STYLE = "supplementary/stylization_models"
_TEXTURE = "supplementary/texture_models"

CATALOGUE: dict[str, ModelEntry] = {entry.name: entry for entry in (
    _v1("starry", "texture_nets v1 stylization: Starry Night", "v1-style", f"{_STYLE}/starry_style.t7",
        "e67e0a08e91a3f08de2abb5492b63dcfb01bfe8e80764bb5845309a4b20709c5", 331476,
        bundled="texture_nets_v1_starry_style.t7"),
    _v1("mosaic", "texture_nets v1 stylization: mosaic", "v1-style", f"{_STYLE}/mosaic_style.t7",
        "1dfcb756d8746dc6b791a2d94724cf71a19c73f38ec469ac18036a4a1a8965e2", 331476),
    _v1("pleades", "texture_nets v1 stylization: Pleiades", "v1-style", f"{_STYLE}/pleades_style.t7",
        "b74ef48a9ca0580efd72f4c180873ee41961f96e7b94679a5d39dbecc3876708", 331476),
    _v1("turner", "texture_nets v1 stylization: Turner", "v1-style", f"{_STYLE}/turner_style.t7",
        "cd149b696c6bb282c7deba71209a9ef34cb5f92182cd7a88f28b4b316ca032df", 331476),
    _v1("pebble", "texture_nets v1 texture: pebbles", "v1-texture", f"{_TEXTURE}/pebble.png_model.t7",
        "de2cc00d646af862f1c159d295e6c16369d1464365a86b494283660d12ee4bba", 571593,
        bundled="texture_nets_v1_pebble.t7"),
    _v1("bricks", "texture_nets v1 texture: bricks", "v1-texture", f"{_TEXTURE}/bricks.png_model.t7",
        "07fcbd761a3127f0bfdc6c0f1d8c900f7d000569904ba2c0603ac3980c19b013", 562589),
    _v1("pixelcity", "texture_nets v1 texture: pixel city windows", "v1-texture",
        f"{_TEXTURE}/pixelcity_windows2.jpg_model.t7",
        "147bbf3bed8cfca66e63bea5bcb291693dd7686bec8b9b0b69961a50391c272b", 571593),
    _v1("red-peppers", "texture_nets v1 texture: red peppers", "v1-texture",
        f"{_TEXTURE}/red-peppers256.o.jpg_model.t7",
        "d5962d1232e187cbe5540c7d9bdb4140d25d294f42d5db7149757401e2890256", 571593),
    ModelEntry("demos-starry", "torch-opencv-demos stylization: Starry Night", "demos", _DEMOS, _DEMOS_COMMIT,
               "texture_nets/starry.t7", "246fe3d54029b25b3670648c412e1c53bef4b1d6c497a19367aefa325dfb7e48",
               1060205, _NO_LICENSE, "torch-opencv-demos__starry.t7"),
    ModelEntry("pollock", "torch-opencv-demos stylization: Pollock", "demos", _DEMOS, _DEMOS_COMMIT,
               "texture_nets/pollock.t7", "ed4caac5020b1d0598683e99e012ead86dc623acbb7fd54ffe909e9bf1e8ca01",
               1064829, _NO_LICENSE, "torch-opencv-demos__pollock.t7"),
    ModelEntry("doodle-starry-night", "online-neural-doodle: Starry Night doodles", "doodle", _DOODLE,
               _DOODLE_COMMIT, "pretrained/starry_night.t7",
               "a91fffb704beea9491a29301fd7743cc9c907c36d3959fbe254152bbf62af1a7", 2961480, _NO_LICENSE,
               "online-neural-doodle__starry_night.t7",
               # pretrained/gen_doodles.hdf5colors.npy: the k-means centroids apply.py maps a mask with.
               palette=((0.536, 0.384, 254.813), (253.130, 1.194, 1.267), (0.916, 254.199, 0.117),
                        (253.156, 252.921, 254.542))),
)}


def entry_named(name: str) -> ModelEntry | None:
    """The catalogue entry for ``name`` (also accepts the file names used in ../shared/realmodels)."""
    entry = CATALOGUE.get(name)
    if entry is not None:
        return entry
    return next((e for e in CATALOGUE.values() if name in (e.file_name, e.bundled)), None)
