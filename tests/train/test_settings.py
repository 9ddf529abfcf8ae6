"""``--set key=value``: names, typed values and their errors (minirc/train/settings.py)."""
import pytest

from minirc.train.demo import build, demo_config
from minirc.train.settings import apply_sets, model_fields, parse_sets, parse_value


def test_parse_sets_splits_on_the_first_equals_sign():
    assert parse_sets(["a.b=1", "c = x=y"]) == {"a.b": "1", "c": "x=y"}
    assert parse_sets(None) == {}
    for bad in ("novalue", "=3"):
        with pytest.raises(ValueError, match="key=value"):
            parse_sets([bad])


@pytest.mark.parametrize("text, type_name, expected", [
    ("3", "int", 3), ("0.5", "float", 0.5), ("2", "float", 2.0), ("none", "int | None", None),
    ("7", "int | None", 7), ("true", "bool", True), ("0", "bool", False), ("roi_pool", "str", "roi_pool"),
    ("0.9,0.97", "tuple", (0.9, 0.97)), ("[[8],[16]]", "tuple", ((8,), (16,))), ("96", "tuple", (96,)),
])
def test_values_are_parsed_by_the_declared_type(text, type_name, expected):
    value = parse_value(text, type_name, "k")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text, type_name, words", [
    ("abc", "float", "a number"), ("1.5", "int", "an int"), ("maybe", "bool", "true or false"),
    ("none", "int", "an int"), ("a,b", "tuple", "a comma-separated list"),
])
def test_a_wrong_type_names_the_field_and_the_type(text, type_name, words):
    with pytest.raises(ValueError, match=f"--set k: expected {words}"):
        parse_value(text, type_name, "k")


def test_apply_sets_reaches_the_solver_the_data_and_the_model():
    base = demo_config("tiny")
    cfg = apply_sets(base, {"train.lr": "0.01", "data.train_max_objects": "3",
                            "roi_heads.pooler_type": "roi_pool", "model.mask_head.loss": "softmax"})
    assert (cfg.train.lr, cfg.train_max_objects) == (0.01, 3)
    assert cfg.model_overrides == {"roi_heads.pooler_type": "roi_pool", "mask_head.loss": "softmax"}
    assert base.train.lr == 0.02 and base.model_overrides == {}  # the preset is not changed
    model, train_ds, _ = build(cfg, seed=0)
    assert model.config.roi_heads.pooler_type == "roi_pool" and model.config.mask_head.loss == "softmax"
    assert train_ds.max_objects == 3


def test_unknown_names_list_the_closest_valid_ones():
    with pytest.raises(ValueError, match=r"unknown setting 'roi_head.pooler_type'; closest: roi_heads.pooler_type"):
        apply_sets(demo_config("tiny"), {"roi_head.pooler_type": "roi_pool"})
    with pytest.raises(ValueError, match="train.lr"):
        apply_sets(demo_config("tiny"), {"train.lrr": "0.1"})


def test_model_values_are_checked_by_the_config_itself():
    with pytest.raises(ValueError, match="pooler_type"):
        apply_sets(demo_config("tiny"), {"roi_heads.pooler_type": "bogus"})


def test_every_model_leaf_field_has_a_dotted_name():
    names = model_fields()
    assert names["roi_heads.pooler_type"] == "str" and names["num_classes"] == "int"
    assert "backbone" not in names and "mask_head.loss" in names
