"""Mutation fuzzing of the Torch7 reader with real .t7 files as seeds.

Every mutant must either load (``load_module_tree`` + ``trace_paths`` + the
``inspect`` rendering) or raise a ``T7Error`` whose message is one line — never
another exception, a hang or a huge allocation. Mutations are deterministic:
case ``i`` of a seed file uses ``numpy.random.default_rng((seed, i))``.

The CI test (parity_tests/test_t7_fuzz.py) runs a small fixed number of cases;
the one-off campaign runs from the command line and prints the figures recorded
in docs/hardening.md::

    python -m parity_tests.fuzz_campaign --cases 10000 [--memory-every 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fixtures import ORACLE_NARROW_DIR
from t7file import T7Error, load_module_tree, trace_paths

SHARED_DIR = Path(os.environ.get("TEXTURE_NETS_SHARED", Path(__file__).resolve().parents[2] / "shared"))

_INT32 = (0, 1, -1, 2, 3, 4, 5, 7, 8, 16, 255, 256, 65535, 65536, 2**30, 2**31 - 1, -(2**31), -2)
_INT64 = (0, 1, -1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, -(2**63), -(2**31))
_TENSOR_NAMES = (b"Tensor", b"Storage")


def seed_files(include_shared: bool = True) -> list[Path]:
    """The real Torch7 files to mutate: committed fixtures, then ../shared oracle and real-world models."""
    files = sorted(ORACLE_NARROW_DIR.glob("*.t7"))
    if include_shared:
        for folder in (SHARED_DIR / "oracle", SHARED_DIR / "realmodels"):
            files += sorted(folder.glob("*.t7")) if folder.is_dir() else []
    return files


# -- mutators: (data, rng) -> mutant ------------------------------------------
def _bitflip(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        position = int(rng.integers(len(out)))
        out[position] ^= 1 << int(rng.integers(8))
    return bytes(out)


def _set_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        out[int(rng.integers(len(out)))] = int(rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01]))
    return bytes(out)


def _overwrite(data: bytes, position: int, value: bytes) -> bytes:
    return data[:position] + value + data[position + len(value):]


def _int32(data: bytes, rng: np.random.Generator) -> bytes:
    value = int(rng.choice(_INT32)) if rng.random() < 0.8 else int(rng.integers(-(2**31), 2**31))
    return _overwrite(data, int(rng.integers(max(len(data) - 4, 1))), np.int32(value).tobytes())


def _int64(data: bytes, rng: np.random.Generator) -> bytes:
    value = int(rng.choice(_INT64))
    return _overwrite(data, int(rng.integers(max(len(data) - 8, 1))), np.int64(value).tobytes())


def _near_tensor(data: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite an int or long just after a Tensor/Storage class name: ndim, sizes, strides, offset, size."""
    name = _TENSOR_NAMES[int(rng.integers(2))]
    hits = []
    start = data.find(name)
    while start >= 0 and len(hits) < 4096:
        hits.append(start + len(name))
        start = data.find(name, start + 1)
    if not hits:
        return _int32(data, rng)
    position = hits[int(rng.integers(len(hits)))] + int(rng.integers(0, 64))
    wide = rng.random() < 0.5
    value = np.int64(rng.choice(_INT64)).tobytes() if wide else np.int32(rng.choice(_INT32)).tobytes()
    return _overwrite(data, min(position, len(data)), value)[: len(data)]


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(len(data)))]


def _delete_chunk(data: bytes, rng: np.random.Generator) -> bytes:
    start = int(rng.integers(len(data)))
    return data[:start] + data[start + int(rng.integers(1, 256)):]


def _duplicate_chunk(data: bytes, rng: np.random.Generator) -> bytes:
    start = int(rng.integers(len(data)))
    chunk = data[start:start + int(rng.integers(1, 256))]
    at = int(rng.integers(len(data)))
    return data[:at] + chunk + data[at:]


def _splice(data: bytes, rng: np.random.Generator) -> bytes:
    """Copy a region of the file over another one (moves structure: type ids, indices, names)."""
    length = int(rng.integers(4, 128))
    source = int(rng.integers(max(len(data) - length, 1)))
    target = int(rng.integers(max(len(data) - length, 1)))
    return _overwrite(data, target, data[source:source + length])


def _insert_random(data: bytes, rng: np.random.Generator) -> bytes:
    at = int(rng.integers(len(data)))
    return data[:at] + rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes() + data[at:]


def _ascii_token(data: bytes, rng: np.random.Generator) -> bytes:
    """ASCII files: replace one whitespace-delimited token by an interesting one."""
    for _ in range(8):
        at = int(rng.integers(len(data)))
        start = max(data.rfind(b"\n", 0, at), data.rfind(b" ", 0, at)) + 1
        end = min(i for i in (data.find(b"\n", at), data.find(b" ", at), len(data)) if i >= 0)
        if end > start:
            token = rng.choice([b"-1", b"0", b"2147483647", b"99999999999999999999", b"nan", b"inf", b"1e308",
                                b"-nan", b"x", b"", b"1.5", b"4611686018427387904"])
            return data[:start] + bytes(token) + data[end:]
    return _bitflip(data, rng)


MUTATORS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "bitflip": _bitflip,
    "set_bytes": _set_bytes,
    "int32": _int32,
    "int64": _int64,
    "near_tensor": _near_tensor,
    "truncate": _truncate,
    "delete_chunk": _delete_chunk,
    "duplicate_chunk": _duplicate_chunk,
    "splice": _splice,
    "insert_random": _insert_random,
}


def mutate(data: bytes, seed: int, case: int, ascii_file: bool = False) -> tuple[str, bytes]:
    rng = np.random.default_rng((seed, case))
    names = [*MUTATORS, "ascii_token"] if ascii_file else list(MUTATORS)
    name = names[int(rng.integers(len(names)))]
    mutator = _ascii_token if name == "ascii_token" else MUTATORS[name]
    mutant = data
    for _ in range(int(rng.integers(1, 3))):  # one or two stacked mutations
        mutant = mutator(mutant, rng) or mutant
    return name, mutant


# -- running one case ---------------------------------------------------------
class CaseTimeout(Exception):
    pass


@dataclass
class Outcome:
    kind: str  # "loaded", an error class name, or "UNEXPECTED <type>: message"
    seconds: float
    peak_bytes: int = 0
    message: str = ""

    @property
    def acceptable(self) -> bool:
        return not self.kind.startswith("UNEXPECTED")


def run_case(data: bytes, *, timeout_s: float = 10.0, measure_memory: bool = False) -> Outcome:
    """Load, trace and render one mutant; classify what happened."""
    from texture_nets.commands.inspect import render_tree

    def on_alarm(signum, frame):
        raise CaseTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    if measure_memory:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        root = load_module_tree(data)
        trace_paths(root)
        render_tree(root)
        kind, message = "loaded", ""
    except T7Error as error:
        message = str(error)
        kind = type(error).__name__
        if not message or "\n" in message:
            kind, message = f"UNEXPECTED {kind} with a multi-line message", message
    except CaseTimeout:
        kind, message = "UNEXPECTED timeout", f"over {timeout_s} s"
    except Exception as error:  # the point of fuzzing: anything else is a finding
        kind, message = f"UNEXPECTED {type(error).__name__}", str(error)[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        seconds = time.perf_counter() - start
        peak = 0
        if measure_memory:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    return Outcome(kind, seconds, peak, message)


@dataclass
class CampaignResult:
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)
    by_mutator: dict[str, Counter] = field(default_factory=dict)
    max_seconds: float = 0.0
    max_seconds_case: str = ""
    max_peak_bytes: int = 0
    max_peak_case: str = ""
    unexpected: list[dict] = field(default_factory=list)

    def add(self, label: str, mutator: str, outcome: Outcome) -> None:
        self.cases += 1
        self.outcomes[outcome.kind] += 1
        self.by_mutator.setdefault(mutator, Counter())[outcome.kind] += 1
        if outcome.seconds > self.max_seconds:
            self.max_seconds, self.max_seconds_case = outcome.seconds, label
        if outcome.peak_bytes > self.max_peak_bytes:
            self.max_peak_bytes, self.max_peak_case = outcome.peak_bytes, label
        if not outcome.acceptable:
            self.unexpected.append({"case": label, "kind": outcome.kind, "message": outcome.message})


def campaign(files: list[Path], cases: int, *, seed: int = 2024, memory_every: int = 0,
             timeout_s: float = 10.0, progress: bool = False) -> CampaignResult:
    """``cases`` mutants spread round-robin over ``files``; case i of file k uses rng((seed + k, i)).

    Every ``memory_every``-th case (0: none) is run under tracemalloc, which costs ~4x in time.
    """
    result = CampaignResult()
    seeds = [(path, path.read_bytes()) for path in files]
    for i in range(cases):
        k = i % len(seeds)
        path, data = seeds[k]
        mutator, mutant = mutate(data, seed + k, i // len(seeds), ascii_file=path.name.endswith("_ascii.t7"))
        measure = memory_every > 0 and i % memory_every == 0
        outcome = run_case(mutant, timeout_s=timeout_s, measure_memory=measure)
        result.add(f"{path.name}#{i // len(seeds)}", mutator, outcome)
        if progress and (i + 1) % 500 == 0:
            print(f"{i + 1}/{cases}: {dict(result.outcomes)}; max {result.max_seconds:.2f} s", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--memory-every", type=int, default=0, metavar="N",
                        help="measure the peak allocation of every N-th case with tracemalloc (slow)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per case")
    parser.add_argument("--no-shared", action="store_true", help="only the committed fixtures as seeds")
    parser.add_argument("--max-seed-bytes", type=int, help="skip seed files larger than this")
    parser.add_argument("--min-seed-bytes", type=int, default=0, help="skip seed files smaller than this")
    parser.add_argument("--json", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    files = [path for path in seed_files(include_shared=not args.no_shared)
             if args.min_seed_bytes <= path.stat().st_size <= (args.max_seed_bytes or path.stat().st_size)]
    start = time.perf_counter()
    result = campaign(files, args.cases, seed=args.seed, memory_every=args.memory_every, timeout_s=args.timeout,
                      progress=True)
    summary = {
        "cases": result.cases,
        "seed_files": [p.name for p in files],
        "seed_file_bytes": {p.name: p.stat().st_size for p in files},
        "outcomes": dict(result.outcomes.most_common()),
        "by_mutator": {k: dict(v.most_common()) for k, v in sorted(result.by_mutator.items())},
        "max_seconds_per_case": round(result.max_seconds, 3),
        "max_seconds_case": result.max_seconds_case,
        "memory_measured_every": args.memory_every or None,
        "max_traced_peak_mib_per_case": round(result.max_peak_bytes / 2**20, 1) if args.memory_every else None,
        "max_traced_peak_case": result.max_peak_case if args.memory_every else None,
        # Whole-process high-water mark (Python, numpy and all cases): an upper bound for any one case.
        "process_max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "unexpected": result.unexpected[:50],
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if result.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
