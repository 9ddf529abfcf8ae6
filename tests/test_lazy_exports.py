"""Public names resolve to functions even where a file is named like the function it defines."""
import types

import minirc


def test_function_named_like_its_file_stays_a_function():
    from minirc.nn.functional import linear as first  # noqa: F401
    from minirc.ops.box_iou import box_iou_numpy  # noqa: F401  (imports the submodule by its path)

    for _ in range(2):  # the second access is where a shadowing module would show
        assert isinstance(minirc.nn.functional.linear, types.FunctionType)
        assert isinstance(minirc.ops.box_iou, types.FunctionType)


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        minirc.ops.nope  # noqa: B018


def test_submodules_load_on_first_use():
    assert isinstance(minirc.ops, types.ModuleType)
    assert "box_iou" in dir(minirc.ops)
