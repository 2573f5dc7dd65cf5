"""Errors raised while reading Torch7 files or interpreting their module trees.

Every error carries a one-line message meant for the user: the CLI prints it as is
and exits with status 2, so messages name the file position, class or Lua path.
"""

from __future__ import annotations


class T7Error(Exception):
    """Base class: anything wrong with a .t7 file or the model inside it."""


class T7FormatError(T7Error):
    """The bytes are not a well-formed Torch7 serialisation (truncated, corrupt, hostile)."""


class T7ModelError(T7Error):
    """The file is well formed but the module tree is not what a generator needs."""

    def __init__(self, message: str, *, torch_class: str | None = None, lua_path: str | None = None):
        where = ""
        if torch_class is not None:
            where = f"{torch_class} at {describe_path(lua_path or '')}: "
        super().__init__(where + message)
        self.torch_class = torch_class
        self.lua_path = lua_path


class UnsupportedModuleError(T7ModelError):
    """A module class that an implementation does not know how to run."""

    def __init__(self, torch_class: str, lua_path: str, supported: list[str] | tuple[str, ...]):
        self.supported = tuple(sorted(supported))
        super().__init__(
            "unsupported module class; supported classes: " + ", ".join(self.supported),
            torch_class=torch_class,
            lua_path=lua_path,
        )


def describe_path(lua_path: str) -> str:
    """Human form of a dotted Lua path: '' is the root, '12.1.2' is model.modules[12]...."""
    if lua_path == "":
        return "the root module"
    return f"Lua path {lua_path}"
