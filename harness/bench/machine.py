"""The CPU's physical float32 limit: cores × clock × FMA lanes × FMA pipes × 2, each factor with its source.

    limit = physical_limit()     # {"gflops": 166.1, "cores": {...}, "clock_ghz": {...}, ...}

No measured rate can beat this number (a fast convolution algorithm can beat a *direct* FLOP
count, since Winograd does fewer multiplications than the count says; docs/benchmarks.md). Each
factor is read from the machine and says where it came from, so a reader can tell a measured
fact from an assumption:

* **cores**: the CPUs this process may run on (``sched_getaffinity``), capped by a cgroup CPU
  quota (``cpu.max``) when one is set;
* **clock**: the highest of the cpufreq maximum (``/sys/devices/system/cpu/cpu*/cpufreq/
  cpuinfo_max_freq``: the top clock the kernel may set) and ``/proc/cpuinfo``'s ``cpu MHz`` (the
  current clock; a virtual machine usually reports the host's nominal clock there and may run
  faster under turbo, which then shows as a measured rate above this limit);
* **FMA lanes**: float32 lanes of the widest FMA the flags in ``/proc/cpuinfo`` announce:
  ``avx512f`` → 16, ``avx2`` + ``fma`` → 8 (``avx`` without ``fma``: 8 lanes, a multiply and an add
  on separate ports, counted the same; otherwise SSE's 4);
* **FMA pipes**: FMAs of that width issued per cycle per core. Not in any flag: every x86 core with
  AVX2 since Intel Haswell and AMD Zen 2 has two 256-bit FMA pipes; AMD Zen 4 (family 25) runs a
  512-bit FMA on both 256-bit pipes at once, so one 512-bit FMA per cycle; Intel's AVX-512 server
  cores have two 512-bit pipes (some client parts one). The value is taken from this table and
  marked as assumed;
* **× 2**: an FMA is a multiply and an add.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
CPU_SYS = Path("/sys/devices/system/cpu")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def physical_limit(cpuinfo: str | None = None, cpufreq_khz: list[int] | None = None,
                   cores: tuple[int, str] | None = None) -> dict[str, Any]:
    """The limit and its factors as JSON-able data. Arguments override what is read (for tests)."""
    text = cpuinfo if cpuinfo is not None else _read(CPUINFO)
    fields = _first_processor(text)
    flags = set(fields.get("flags", "").split())
    vendor = fields.get("vendor_id", "")
    family = _int(fields.get("cpu family"))
    core_count, core_source = cores if cores is not None else usable_cores()
    clock = _clock(text, _cpufreq_max_khz() if cpufreq_khz is None else cpufreq_khz)
    lanes, lanes_source = _fma_lanes(flags)
    pipes, pipes_source = _fma_pipes(vendor, family, lanes)
    gflops = None
    if clock["ghz"] is not None:
        gflops = core_count * clock["ghz"] * lanes * pipes * 2
    return {
        "gflops": gflops,
        "formula": "cores × clock × FMA lanes × FMA pipes × 2",
        "cores": {"value": core_count, "source": core_source},
        "clock_ghz": clock,
        "fma_lanes": {"value": lanes, "source": lanes_source},
        "fma_pipes": {"value": pipes, "source": pipes_source, "assumed": True},
        "cpu": fields.get("model name", "unknown"),
        "vendor": vendor or None,
        "family": family,
        "model": _int(fields.get("model")),
    }


def usable_cores() -> tuple[int, str]:
    """(CPUs this process may use, where that number comes from)."""
    getter = getattr(os, "sched_getaffinity", None)
    if getter is not None:
        count, source = len(getter(0)), "sched_getaffinity (the CPUs this process may run on)"
    else:
        count, source = os.cpu_count() or 1, "os.cpu_count()"
    quota = _cgroup_quota()
    if quota is not None and quota < count:
        return quota, f"cgroup CPU quota ({CGROUP_CPU_MAX}), below the {count} CPUs of {source.split(' ')[0]}"
    return count, source


def _cgroup_quota() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        quota, period = _read(CGROUP_CPU_MAX).split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    return None


def _clock(cpuinfo: str, cpufreq_khz: list[int]) -> dict[str, Any]:
    candidates: list[tuple[float, str]] = []
    if cpufreq_khz:
        candidates.append((max(cpufreq_khz) / 1e6, "cpufreq cpuinfo_max_freq (the top clock the kernel may set)"))
    mhz = [float(line.split(":", 1)[1]) for line in cpuinfo.splitlines()
           if line.startswith("cpu MHz") and ":" in line and _is_number(line.split(":", 1)[1])]
    if mhz:
        candidates.append((max(mhz) / 1e3, "/proc/cpuinfo 'cpu MHz' (the current clock; a virtual machine reports "
                                           "its host's nominal clock there, turbo may run faster)"))
    if not candidates:
        return {"ghz": None, "source": "no clock found (no cpufreq, no 'cpu MHz' in /proc/cpuinfo)", "candidates": []}
    ghz, source = max(candidates)
    return {"ghz": round(ghz, 4), "source": source,
            "candidates": [{"ghz": round(value, 4), "source": text} for value, text in candidates]}


def _cpufreq_max_khz() -> list[int]:
    values = []
    for path in sorted(CPU_SYS.glob("cpu[0-9]*/cpufreq/cpuinfo_max_freq")):
        with contextlib.suppress(OSError, ValueError):
            values.append(int(_read(path).strip()))
    return values


def _fma_lanes(flags: set[str]) -> tuple[int, str]:
    if "avx512f" in flags:
        return 16, "avx512f in the /proc/cpuinfo flags: 512-bit FMA, 16 float32 lanes"
    if "avx2" in flags and "fma" in flags:
        return 8, "avx2 and fma in the /proc/cpuinfo flags: 256-bit FMA, 8 float32 lanes"
    if "avx" in flags:
        return 8, "avx without fma in the /proc/cpuinfo flags: 256-bit multiply and add, 8 float32 lanes"
    return 4, "no avx in the /proc/cpuinfo flags: SSE, 4 float32 lanes"


def _fma_pipes(vendor: str, family: int | None, lanes: int) -> tuple[int, str]:
    if lanes == 16 and vendor == "AuthenticAMD" and family == 25:
        return 1, ("AMD Zen 4 (cpu family 25) runs a 512-bit FMA on its two 256-bit pipes: one per cycle "
                   "(assumed from the family; no flag says it)")
    if lanes == 16:
        return 2, ("two 512-bit FMA pipes, as on Intel's AVX-512 server cores (some client parts have one; "
                   "assumed: no flag says it)")
    return 2, "two FMA pipes of this width, as on every x86 core since Intel Haswell and AMD Zen 2 (assumed)"


def _first_processor(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    return fields


def _read(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(encoding="utf-8", errors="replace")
    return ""


def _int(text: str | None) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(text)  # type: ignore[arg-type]
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
