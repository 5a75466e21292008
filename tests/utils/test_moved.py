"""``moved``: old import paths warn and forward for one release."""

from __future__ import annotations

import math
import os.path

import pytest

from lightly_derm.utils.moved import moved


def test_a_moved_name_warns_and_is_its_homes_object() -> None:
    getattr_ = moved("old.module", {"sqrt": "math", "join": "os.path"})
    with pytest.warns(FutureWarning, match=r"^old\.module\.sqrt moved to math\.sqrt; "):
        assert getattr_("sqrt") is math.sqrt
    with pytest.warns(FutureWarning, match=r"moved to os\.path\.join"):
        assert getattr_("join") is os.path.join


def test_other_names_raise_attribute_error_without_a_warning(
    recwarn: pytest.WarningsRecorder,
) -> None:
    getattr_ = moved("old.module", {"sqrt": "math"})
    with pytest.raises(
        AttributeError, match="module 'old.module' has no attribute 'cos'"
    ):
        getattr_("cos")
    assert not recwarn.list
    # hasattr on a shim module is False for names that never lived there
    import lightly_derm.jobs.callbacks as shim

    assert not hasattr(shim, "NoSuchCallback")
