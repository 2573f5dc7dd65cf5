"""The options every model-running command shares: which model, its family's conventions, its noise.

    --model M          a .t7 file, an exported artefact (with --t7), or a known model's name (`texture-nets models`)
    --t7 FILE          the .t7 the artefact was made from (names the layers)
    --family F         override the family read off the module classes (docs/real-models.md)
    --batchnorm MODE   override the family's batch-norm mode: train (batch statistics) or evaluate
    --seed N           draw the noise as Torch7 does after torch.manualSeed(N) (default 0)
    --noise NOISE.npz  inject the noise instead: one array per noise module, keyed by Lua path
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.families import FAMILIES, Family, batchnorm_mode, detect_family, family_named, input_planes
from fileio.errors import UserError
from t7file import T7Error, T7Module, load_module_tree


@dataclass(frozen=True)
class ModelChoice:
    """What a command runs: ``model`` (handed to the backends), ``root`` (the module tree that names
    the layers), the family and its batch-norm mode (None for models without batch norms), the
    input's channel count, and the catalogue entry when the model was given by name."""

    model: Path
    root: T7Module
    family: Family
    batchnorm: str | None
    planes: int
    entry: object | None = None

    @property
    def label(self) -> str:
        name = getattr(self.entry, "name", None)
        return f"{name} ({self.model.name})" if name else self.model.name


def add_model_arguments(parser: argparse.ArgumentParser, *, default: str | None = None,
                        artefacts: bool = True) -> None:
    help_default = f" (default: {default})" if default else ""
    parser.add_argument("--model", default=default, required=default is None,
                        help="a .t7 file, a known model's name (`texture-nets models`)"
                        + (", or an exported artefact with --t7" if artefacts else "") + help_default)
    if artefacts:
        parser.add_argument("--t7", type=Path, default=None, metavar="FILE",
                            help="the .t7 file an exported --model was made from (it names the layers)")
    parser.add_argument("--family", choices=sorted(FAMILIES), default=None,
                        help="model family, for its input, batch-norm and deprocess conventions (default: read off "
                        "the module classes; docs/real-models.md)")
    parser.add_argument("--batchnorm", choices=("train", "evaluate"), default=None,
                        help="batch-norm mode: train = statistics of the batch, evaluate = running statistics "
                        "(default: the family's)")


def add_noise_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seed", type=int, default=None, metavar="N",
                       help="for models that draw noise: draw it as Lua Torch7 does after torch.manualSeed(N) "
                       "(default 0)")
    group.add_argument("--noise", type=Path, default=None, metavar="NOISE.npz",
                       help="for models that draw noise: inject it, one array per noise module keyed by Lua path "
                       "(the noise/<path> entries of a Torch7 ground-truth file are accepted)")


def choose_model(args: argparse.Namespace) -> ModelChoice:
    """Resolve --model (path or name), read the tree, apply --family / --batchnorm."""
    from zoo import entry_named, resolve_model

    spec = str(args.model)
    model = resolve_model(spec)
    entry = entry_named(spec) if not Path(spec).exists() else None
    tree_source = getattr(args, "t7", None) or model
    try:
        root = load_module_tree(tree_source)
    except T7Error as error:
        if getattr(args, "t7", None) is None and model.suffix.lower() != ".t7":
            raise UserError(f"{model}: {error}; when --model is an exported artefact, give --t7 with the .t7 file "
                            "it was made from") from None
        raise T7Error(f"{tree_source}: {error}") from None
    family = family_named(args.family) if getattr(args, "family", None) else detect_family(root)
    has_batch_norms = any(m.torch_class.endswith("SpatialBatchNormalization") for m in root.walk())
    mode = (getattr(args, "batchnorm", None) or batchnorm_mode(root, family)) if has_batch_norms else None
    return ModelChoice(model, root, family, mode, input_planes(root), entry)


def run_noise(args: argparse.Namespace, choice: ModelChoice, input_shape: tuple[int, ...],
              dtype: str) -> dict[str, np.ndarray]:
    """The noise of this run (empty for noise-free models): injected with --noise, else drawn with --seed."""
    from harness.core.noise import NoiseError, load_noise, noise_for_run
    from harness.core.shapes import ShapeError

    try:
        injected = load_noise(args.noise) if getattr(args, "noise", None) is not None else None
        return noise_for_run(choice.root, input_shape, seed=getattr(args, "seed", None), noise=injected, dtype=dtype)
    except (NoiseError, ShapeError) as error:
        raise UserError(str(error)) from None


def check_size(choice: ModelChoice, height: int, width: int, batch: int = 1) -> None:
    """One line naming the nearest sizes that work when the model cannot take height x width."""
    from harness.core.shapes import ShapeError, accepts, nearest_sizes, walk_shapes

    if accepts(choice.root, height, width, choice.planes, batch):
        return
    try:
        walk_shapes(choice.root, (batch, choice.planes, height, width))
        reason = "its Concat branches would differ in size"
    except ShapeError as error:
        reason = str(error)
    near = nearest_sizes(choice.root, height, width, choice.planes)
    suggestion = " or ".join(f"{h}x{w}" for h, w in near) if near else "none found nearby"
    raise UserError(f"{choice.label} cannot take {height}x{width} ({reason}; {choice.family.sizes}); nearest sizes "
                    f"that work (H x W): {suggestion}")
