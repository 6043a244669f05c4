"""An import of a module that moved into a subpackage names its new path."""

import importlib

import pytest

import gcl_hf  # noqa: F401
from gcl_hf._moved import MOVED


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_a_moved_module_names_its_new_path(old, new):
    with pytest.raises(ModuleNotFoundError, match=rf"{old} moved to {new}: import it from there"):
        importlib.import_module(old)
    importlib.import_module(new)  # the new path exists


def test_a_missing_module_that_never_existed_is_the_usual_error():
    with pytest.raises(ModuleNotFoundError, match="No module named 'gcl_hf.no_such_module'"):
        importlib.import_module("gcl_hf.no_such_module")
