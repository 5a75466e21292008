"""lightly-derm's own error types: bad configuration, data and checkpoints.

The contract: an error of one of these types means *the input is wrong* — a file, an
argument, an environment variable — and its message names what is wrong and why, in
one line, so a command line can print it as it is. Anything else that escapes
lightly-derm is a bug and keeps its traceback.

:class:`ConfigError`, :class:`DataError` and :class:`CheckpointError` are also
``ValueError`` subclasses (they were ``ValueError`` before these types existed), so
``except ValueError`` keeps catching them. Builds on nothing but Python's exceptions.

Example:
    >>> from lightly_derm.errors import DataError, LightlyDermError
    >>> try:
    ...     raise DataError("labels.csv, line 3: duplicated id 'ISIC_0000001'")
    ... except ValueError as exc:
    ...     print(isinstance(exc, LightlyDermError), exc)
    True labels.csv, line 3: duplicated id 'ISIC_0000001'
"""

from __future__ import annotations


class LightlyDermError(Exception):
    """Base of lightly-derm's errors about bad input: the message is one complete line."""


class ConfigError(LightlyDermError, ValueError):
    """Bad configuration: an argument, a config file, an environment variable, a plugin."""


class DataError(LightlyDermError, ValueError):
    """Bad data: an image, a label CSV, an archive; the message names the file (and line)."""


class CheckpointError(LightlyDermError, ValueError):
    """A checkpoint that cannot be used: corrupt, empty, carrying code, non-finite weights."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "LightlyDermError"]
