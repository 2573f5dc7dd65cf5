"""The one error type of the backend contract."""

from __future__ import annotations


class BackendError(Exception):
    """A backend cannot be found, imported, constructed or asked this (one-line message).

    Every implementation raises it for requests it cannot serve (an unknown Lua path in
    ``run_module``, a dtype it does not run, missing noise, a wrong input shape), so the harness
    and the command line can report any backend's refusal the same way.
    """
