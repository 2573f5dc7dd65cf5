"""Backend selection for the parity suite.

``--backend NAME`` (repeatable; defined in the root conftest) picks the backends under test: a
built-in name, an entry-point name or a ``module:factory`` plug-in. Without it, every built-in
backend whose framework is importable is selected. A test asks for ``backend_name`` (faithful
backends: every selected one except the known-unfaithful ``tf-seed``) or ``seed_backend_name``
(the seed's reproduction, whose deviations are asserted, not tolerated) and is parametrized over
the selection; a backend that cannot be constructed (module not written yet, framework missing)
skips with the reason instead of erroring. Frameworks and faithfulness come from the registry
(harness.core.registry.BUILTIN).

Parametrization depends only on the command line and on ``importlib.util.find_spec``, never on
importing a framework, so every pytest-xdist worker collects the same test ids.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from contract import BackendError
from contract.protocol import Backend
from harness.core.registry import BUILTIN, get_backend

JUDGE = "reference"  # float64 NumPy reference: the judge of every other backend


def selected_backend_names(config: pytest.Config) -> list[str]:
    """The --backend values in order (deduplicated), or every built-in whose framework is installed."""
    chosen = config.getoption("--backend") or []
    if chosen:
        return list(dict.fromkeys(chosen))
    return [name for name, entry in BUILTIN.items() if entry.installed]


def _faithful(name: str) -> bool:
    """Faithfulness from the registry for built-ins; plug-ins say so themselves (default: faithful).

    Collection must not import frameworks, so a plug-in that cannot even be resolved counts as
    faithful here and skips with its reason when its tests run."""
    entry = BUILTIN.get(name)
    if entry is not None:
        return entry.faithful
    try:
        return bool(getattr(get_backend(name), "faithful", True))
    except BackendError:
        return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = selected_backend_names(metafunc.config)
    if "backend_name" in metafunc.fixturenames:
        faithful = [name for name in names if _faithful(name)]
        metafunc.parametrize("backend_name", faithful or [pytest.param("none", marks=pytest.mark.skip(
            reason="no faithful backend selected"))], scope="session")
    if "seed_backend_name" in metafunc.fixturenames:
        seeds = [name for name in names if not _faithful(name)]
        metafunc.parametrize("seed_backend_name", seeds or [pytest.param("none", marks=pytest.mark.skip(
            reason="tf-seed not selected"))], scope="session")


_BACKENDS: dict[str, Backend | str] = {}


def backend_or_skip(name: str) -> Backend:
    """The backend object, constructed once per process; pytest.skip with the reason if it cannot be."""
    if name not in _BACKENDS:
        try:
            _BACKENDS[name] = get_backend(name)
        except BackendError as error:
            _BACKENDS[name] = str(error)
        except ImportError as error:  # a backend module that exists but imports a missing package
            _BACKENDS[name] = f"backend '{name}' cannot be imported: {error}"
    backend = _BACKENDS[name]
    if isinstance(backend, str):
        pytest.skip(backend)
    return backend


@pytest.fixture(scope="session")
def backend(backend_name: str) -> Backend:
    return backend_or_skip(backend_name)


@pytest.fixture(scope="session")
def seed_backend(seed_backend_name: str) -> Backend:
    return backend_or_skip(seed_backend_name)


@pytest.fixture(scope="session")
def judge() -> Backend:
    """The float64 reference; without it nothing can be judged, so dependants skip."""
    return backend_or_skip(JUDGE)


RunnerLoader = Callable[[Backend, "str | Path", str], object]


@pytest.fixture(scope="session")
def load_runner() -> RunnerLoader:
    """load(backend, model_file, dtype) -> runner, memoised per process (building TF graphs is slow).

    For model files only (in-memory trees are loaded directly by the property tests). Skips when
    the backend does not support the dtype.
    """
    cache: dict[tuple[str, str, str], object] = {}

    def load(backend: Backend, model: str | Path, dtype: str):
        if dtype not in backend.dtypes:
            pytest.skip(f"backend '{backend.name}' supports {', '.join(backend.dtypes)}, not {dtype}")
        key = (backend.name, str(model), dtype)
        if key not in cache:
            cache[key] = backend.load(model, dtype)
        return cache[key]

    return load


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules running tiny torch models: one intra-op thread is fastest, and two threads on a busy
    2-core machine (parallel test workers) ran 20x slower (measured 5.05 s vs 0.23 s for 21 forwards)."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- order: the cheapest, most specific checks first, so that `pytest -x` stops at the one that names the bug ---------

# Tiers, in running order. A test's tier is its closest ``@pytest.mark.tier(name)`` (function, class or module
# ``pytestmark``), else its module's entry in MODULE_TIERS, else "export" (after every parity check, before the CLI).
TIERS = (
    "foundation",       # the .t7 reader/writer, the comparison, the tolerance model, the model maker
    "judge",            # the judge and shared code: reference against its definitions, deprocess's known answers
    "primitive-fixed",  # fixed one-module cases, one per trap (the mutation battery's order)
    "primitive",        # drawn one-module cases (hypothesis), single-module Torch7 runs
    "layer",            # whole models, every module fed the judge's own input (isolated view)
    "network",          # whole models end to end, Torch7 runs of whole models, drawn whole generators
    "meta",             # the suite judged: mutation catalogue, file fuzzing
    "export",           # exported artefacts, plug-ins, devices
    "cli",              # the command line and its reports
)
MODULE_TIERS: dict[str, str] = {  # within a tier, modules run in this table's order
    "test_layering": "foundation",
    "test_compare": "foundation",
    "test_t7_writer": "foundation",
    "test_ascii_t7": "foundation",
    "test_hostile_t7": "foundation",
    "test_make_model": "foundation",
    "test_tolerance_model": "foundation",
    "test_rounding_ceiling": "foundation",
    "test_reference_primitives": "judge",
    "test_reference_fast_paths": "judge",
    "test_properties": "primitive",
    "test_real_model_primitives": "primitive",
    "test_padding_property": "primitive",
    "test_torch_oracle": "primitive",
    "test_tf_oracle": "primitive",
    "test_end_to_end": "network",
    "test_network_properties": "network",
    "test_reference_oracle": "network",
    "test_reference_v1_oracle": "network",
    "test_oracle": "network",
    "test_tf_seed": "network",
    "test_definitions": "network",
    "test_mutations": "meta",
    "test_t7_fuzz": "meta",
    "test_torch_export": "export",
    "test_tf_export": "export",
    "test_onnx_plugin": "export",
    "test_opencv_plugin": "export",
    "test_gpu": "export",
    "test_images": "cli",
    "test_cli": "cli",
    "test_drift": "cli",
    "test_verify": "cli",
    "test_bench": "cli",
    "test_first_hour": "cli",
    "test_real_model_cli": "cli",
    "test_zoo": "cli",
}
_DEFAULT_TIER = "export"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tier(name): where the test runs in the suite's order, one of "
                            f"{', '.join(TIERS)} (parity_tests/conftest.py)")


def tier_of(item: pytest.Item) -> str:
    marker = item.get_closest_marker("tier")
    if marker is not None:
        name = marker.args[0]
        if name not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: unknown tier {name!r}; tiers: {', '.join(TIERS)}")
        return name
    return MODULE_TIERS.get(Path(str(item.fspath)).stem, _DEFAULT_TIER)


def order_key(item: pytest.Item, index: int) -> tuple[int, int, int]:
    module_rank = list(MODULE_TIERS).index(Path(str(item.fspath)).stem) if Path(str(item.fspath)).stem in \
        MODULE_TIERS else len(MODULE_TIERS)
    return TIERS.index(tier_of(item)), module_rank, index


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tiers first, then modules in MODULE_TIERS order, then collection order: a deterministic function of the
    collected items alone, so every pytest-xdist worker computes the same order."""
    keyed = sorted(((order_key(item, index), item) for index, item in enumerate(items)), key=lambda pair: pair[0])
    items[:] = [item for _, item in keyed]
