"""User-facing errors.

Everything a user can get wrong (a path, a branch, a config key, a model file) raises a
:class:`HepflowError` subclass whose message names the offending file, branch or value. The
command line prints the message on one line and exits with status 2; ``--debug`` shows the
traceback.
"""

from __future__ import annotations


class HepflowError(Exception):
    """Base class of the errors hepflow reports to users."""


class InputError(HepflowError):
    """An input file is missing, unreadable, corrupt or lacks a tree or branch."""


class ConfigError(HepflowError):
    """A configuration file or command-line option has an unknown key or a wrong value."""


class ModelError(HepflowError):
    """A model file is missing, truncated, tampered with, or does not match the data."""


class OutputError(HepflowError):
    """An output cannot be written (exists without ``--overwrite``, unwritable directory)."""
