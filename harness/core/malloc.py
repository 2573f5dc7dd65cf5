"""Keep freed activation memory for the next forward (glibc malloc settings, applied once per process).

An application's policy, not a backend's: the ``texture-nets`` command and the bench's workers apply it at
start (texture_nets/cli.py, harness/bench/benchmark.py); a program that imports the backends as a library
keeps its own malloc settings unless it calls :func:`keep_freed_memory` itself.

PyTorch's CPU tensors come from the C library's malloc. With glibc's defaults a large tensor is a fresh
``mmap`` when it is allocated and is unmapped when it is freed, and glibc returns free memory at the top
of its heap to the system as soon as more than its trim threshold (at most 64 MiB) is free there: every
forward then faults its activations in again, page by page (zeroed by the kernel). Measured at 512² on the
full-width generator (2 cores, a KVM guest): 250 000 page faults and 0.55 s of system time per forward
before the other changes of this backend; a traced forward, which keeps all 59 traced values (676 MiB),
still faulted 165 000 pages and took 1.3-1.6x the untraced forward, and 1.02-1.08x with the settings
below. TensorFlow's own allocator keeps its memory in the same way.

The settings, both bounded and both left alone where the process already chose its own:

* ``M_MMAP_THRESHOLD`` = 32 MiB: allocations below it come from the heap, where freed memory is reused.
  32 MiB is glibc's own ceiling for its dynamic threshold (``DEFAULT_MMAP_THRESHOLD_MAX`` on 64-bit),
  which a process reaches anyway once it frees a 32 MiB block; setting it makes it so from the start.
* ``M_TOP_PAD`` = 1 GiB: when the heap shrinks, up to 1 GiB of free memory stays with the process
  (glibc's default keeps 128 KiB): about what a traced 512² forward keeps (0.66 GiB for the generator,
  0.83 and 1.13 GiB for the v1 starry and pebble nets).
  The heap's growth reserves as much address space, which costs no memory until it is used.

What this costs: up to 1 GiB of freed memory stays resident between forwards (and is reused by the next
allocations of any library in the process, which these settings reach too). Measured peaks: the bench's
torch worker at 512² 421-426 MiB (415 without); ``texture-nets drift`` at 512² with torch, tf and onnx
3.34 GiB (3.30 without; same report). Only glibc on Linux; elsewhere nothing is done.
``TEXTURE_NETS_MALLOC=default`` in the environment, or any ``MALLOC_*`` variable or glibc.malloc
tunable, leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TOP_PAD = -2  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20
TOP_PAD_BYTES = 1 << 30
OPT_OUT_VARIABLE = "TEXTURE_NETS_MALLOC"

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings above once per process; whether they are in effect."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def _apply() -> bool:
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() == "default":
        return False
    # Variables with which the user already tuned glibc's malloc take precedence.
    if any(name.startswith("MALLOC_") for name in os.environ) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success, 0 when it refuses a value.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(libc.mallopt(M_TOP_PAD, TOP_PAD_BYTES))
