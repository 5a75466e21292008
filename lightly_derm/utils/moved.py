"""Old import paths kept for one release: a module ``__getattr__`` that warns and forwards.

Builds on PEP 562 (module ``__getattr__``): a module whose names moved keeps only

    __getattr__ = moved(__name__, {"Name": "new.home.module", ...})

and ``from old.module import Name`` still works, with a :class:`FutureWarning` naming
the new path.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved(old: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for names that moved from module ``old`` to ``homes``.

    Args:
        old: The old module's name (its ``__name__``).
        homes: Each moved name and the module that exports it now.

    Returns:
        The ``__getattr__``: a moved name warns (``FutureWarning``: "old.Name moved to
        home.Name; the old path goes in the next release") and returns the object from
        its home; any other name raises :class:`AttributeError` as a module would.

    Example:
        >>> import warnings
        >>> getattr_ = moved("old.place", {"sqrt": "math"})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     getattr_("sqrt")(4.0)
        2.0
        >>> str(caught[0].message)
        'old.place.sqrt moved to math.sqrt; the old path goes in the next release'
    """

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        home = homes[name]
        warnings.warn(
            f"{old}.{name} moved to {home}.{name}; the old path goes in the next release",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)

    return __getattr__
