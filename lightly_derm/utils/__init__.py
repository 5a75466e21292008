"""Utilities: checks of user-given arguments (:mod:`lightly_derm.utils.validation`).

Developer tools stay in their modules and are not exported here:
:mod:`lightly_derm.utils.host_sync` finds host synchronisations in GPU code (the tests
and benchmarks use it); :mod:`lightly_derm.utils.moved` keeps moved names importable
from their old paths for one release.
"""

from lightly_derm.utils.validation import Range, check_choice, check_int, check_positive

__all__ = ["Range", "check_choice", "check_int", "check_positive"]
