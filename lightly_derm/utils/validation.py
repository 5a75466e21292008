"""Checks of user-given arguments: one line that names the argument, the rule and the value.

Builds on nothing but Python. One :class:`Range` describes a numeric rule once; it
checks values (:meth:`Range.check`), and prints itself for help texts and the docs'
option tables (``str(Range.int(2))`` is ``"integer ≥ 2"``). The job configurations
attach a rule to each numeric option (:func:`lightly_derm.jobs.config.option`), so
every check and its documentation come from the same object.

Example:
    >>> from lightly_derm.utils.validation import Range, check_int
    >>> check_int("batch_size", 32, minimum=2)
    32
    >>> print(Range.unit_interval())
    in (0, 1]
    >>> Range.unit_interval().check("label_fraction", 0.0)
    Traceback (most recent call last):
    ...
    lightly_derm.errors.ConfigError: label_fraction must be in (0, 1], got 0.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from lightly_derm.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Range:
    """A numeric rule: integer or real, with optional (open or closed) bounds.

    Attributes:
        low: The lower bound (``None``: none).
        high: The upper bound (``None``: none).
        low_open: The lower bound itself is not allowed.
        high_open: The upper bound itself is not allowed.
        integer: The value must be an ``int`` (``bool`` is not one).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    @classmethod
    def int(cls, minimum: int = 1) -> Range:
        """An integer ``>= minimum``."""
        return cls(low=minimum, integer=True)

    @classmethod
    def positive(cls) -> Range:
        """A real number ``> 0``."""
        return cls(low=0.0, low_open=True)

    @classmethod
    def unit_interval(cls, high_open: bool = False) -> Range:
        """A share in ``(0, 1]`` (or ``(0, 1)`` with ``high_open``)."""
        return cls(low=0.0, high=1.0, low_open=True, high_open=high_open)

    def __str__(self) -> str:
        if self.integer and self.high is None and self.low is not None:
            return f"integer ≥ {self.low:g}"
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            kind = "integer " if self.integer else ""
            return f"{kind}in {left}{self.low:g}, {self.high:g}{right}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '≥'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '≤'} {self.high:g}")
        return ("integer " if self.integer else "") + " and ".join(parts)

    def _message(self) -> str:
        if self.integer and self.high is None and self.low is not None:
            return f"must be an integer >= {self.low:g}"
        if self.low is not None and self.high is not None:
            return "must be " + str(self)
        text = str(self).replace("≥", ">=").replace("≤", "<=")
        return "must be " + text

    def check(self, name: str, value: Any) -> Any:
        """Returns ``value`` if it follows the rule.

        Raises:
            ConfigError: It does not (a ``ValueError``; the message names ``name``).
        """
        if isinstance(value, bool) or not isinstance(
            value, int if self.integer else (int, float)
        ):
            raise ConfigError(f"{name} {self._message()}, got {value!r}")
        number = float(value)
        too_low = self.low is not None and (
            number <= self.low if self.low_open else number < self.low
        )
        too_high = self.high is not None and (
            number >= self.high if self.high_open else number > self.high
        )
        if too_low or too_high or math.isnan(number):
            raise ConfigError(f"{name} {self._message()}, got {value!r}")
        return value


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """Returns ``value`` if it is an ``int >= minimum``; else raises :class:`ConfigError`."""
    return Range.int(minimum).check(name, value)


def check_positive(name: str, value: Any) -> float:
    """Returns ``value`` as a float if it is a number ``> 0``."""
    return float(Range.positive().check(name, value))


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Returns ``value`` if it is one of ``choices``; else raises :class:`ConfigError`."""
    options = list(choices)
    if value not in options:
        listed = " or ".join(repr(c) for c in options)
        raise ConfigError(f"{name} must be {listed}, got {value!r}")
    return value


__all__ = ["Range", "check_choice", "check_int", "check_positive"]
