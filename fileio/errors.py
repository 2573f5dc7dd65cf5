"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class UserError(Exception):
    """Bad input or arguments the user can fix (unreadable image, bad shape, unwritable path)."""
