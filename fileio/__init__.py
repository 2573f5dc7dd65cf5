"""The user's files: images in and out, input arrays, atomic writes, and the one user-facing error.

A leaf package (numpy and Pillow only) shared by the harness and the command line, so that
neither needs the other to read a picture or to write a report safely.
"""

from fileio.errors import UserError

__all__ = ["UserError"]
