"""Project-wide pytest configuration: paths, options, hypothesis profiles.

Lives at the repository root so that ``pytest parity_tests`` finds the
top-level packages without installing them and every test sees the same
options.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parent
# The shared folder beside the project (real Torch7 oracle, real-world models).
SHARED_DIR = Path(os.environ.get("TEXTURE_NETS_SHARED", REPO_ROOT.parent / "shared"))

# ci: the default, fast and deterministic (same examples every run, no database).
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# thorough: 1000 examples per property (whole-generator properties cap themselves lower), random each run; a
# failure prints the blob that replays it (@reproduce_failure), since it may not come back by itself.
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption(
        "--backend",
        action="append",
        default=[],
        help="backend to test (name, entry point or module:factory); repeatable. Default: every installed one.",
    )
