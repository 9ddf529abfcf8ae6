"""``--set key=value``: change any setting of a run by its dotted name, from the command line.

Three kinds of names, tried in this order:

* ``train.<field>`` -- the solver (:class:`~minirc.train.trainer.TrainConfig`): ``train.lr=0.02``,
  ``train.steps=0.8,0.95``, ``train.iters=600``;
* ``data.<field>`` -- the run's data and evaluation (:class:`~minirc.train.demo.DemoConfig` fields
  other than ``model`` and ``train``): ``data.train_max_objects=12``, ``data.test_images=50``;
* anything else -- the model (:class:`~minirc.model.config.MaskRCNNConfig`, through
  :func:`minirc.model.config.override`), with or without a ``model.`` prefix:
  ``roi_heads.pooler_type=roi_pool``, ``mask_head.loss=softmax``, ``model.rpn.nms_thresh=0.6``.

Values are parsed by the field's declared type: ``int``, ``float`` (ints accepted), ``bool``
(``true/false/1/0/yes/no``), ``str``, ``tuple`` (comma-separated numbers, or JSON for nested
tuples such as ``anchors.sizes=[[8],[16],[32],[64],[128]]``) and ``None`` where the field allows it
(``none``). An unknown name raises a ValueError that lists the closest valid names; a value of
the wrong type names the field and the type it expects.
"""
from __future__ import annotations

import dataclasses
import difflib
import json

from minirc.model.config import MaskRCNNConfig, override, preset
from minirc.train.trainer import TrainConfig

_DATA_EXCLUDED = ("model", "train", "model_overrides")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_sets(items) -> dict:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` (strings; :func:`apply_sets` types them)."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set: expected key=value (e.g. roi_heads.pooler_type=roi_pool), got {item!r}")
        out[key] = value.strip()
    return out


def model_fields(cls=MaskRCNNConfig, prefix="") -> dict:
    """Every leaf field of the model config by dotted name -> its declared type (a string)."""
    out = {}
    for f in dataclasses.fields(cls):
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if sub is not None and dataclasses.is_dataclass(sub):
            out.update(model_fields(sub, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = str(f.type)
    return out


def _field_types(cls, prefix, excluded=()) -> dict:
    return {prefix + f.name: str(f.type) for f in dataclasses.fields(cls) if f.name not in excluded}


def valid_names(demo_cls) -> list:
    """All names ``--set`` accepts for a run config of class ``demo_cls``."""
    return sorted({**_field_types(TrainConfig, "train."), **_field_types(demo_cls, "data.", _DATA_EXCLUDED),
                   **model_fields()})


def parse_value(text: str, type_name: str, key: str):
    """``text`` as a value of the declared type ``type_name`` (e.g. ``"int | None"``)."""
    t = type_name.replace(" ", "")
    optional = "None" in t
    base = t.replace("|None", "").replace("None|", "").replace("Optional[", "").rstrip("]")
    low = text.strip().lower()
    if optional and low in ("none", "null"):
        return None
    wrong = f"--set {key}: expected {_describe(base, optional)}, got {text!r}"
    try:
        if base == "bool":
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise ValueError
        if base == "int":
            return int(text)
        if base == "float":
            return float(text)
        if base == "str":
            return text
        if base == "tuple":
            value = json.loads(text) if text.strip().startswith("[") else [_number(v) for v in text.split(",")]
            return _as_tuple(value)
        if base == "dict":
            value = json.loads(text)
            if isinstance(value, dict):
                return value
    except (ValueError, json.JSONDecodeError):
        raise ValueError(wrong) from None
    raise ValueError(wrong)


def _number(v: str):
    v = v.strip()
    try:
        return int(v)
    except ValueError:
        return float(v)


def _as_tuple(v):
    return tuple(_as_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _describe(base: str, optional: bool) -> str:
    words = {"int": "an int", "float": "a number", "bool": "true or false", "str": "a string",
             "tuple": "a comma-separated list (or JSON list)", "dict": "a JSON object"}
    return words.get(base, base) + (" or none" if optional else "")


def apply_sets(cfg, sets: dict):
    """A copy of the run config ``cfg`` (a ``DemoConfig``) with the ``--set`` strings applied.

    Model names are checked by building the model config (so its own range checks run now, not
    after the data is generated); the typed model values are kept in ``cfg.model_overrides`` so
    that checkpoints and ``--resume`` rebuild the same model.
    """
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train),
                              model_overrides=dict(cfg.model_overrides))
    train_types = _field_types(TrainConfig, "train.")
    data_types = _field_types(type(cfg), "data.", _DATA_EXCLUDED)
    model_types = model_fields()
    for key, text in sets.items():
        if key in train_types:
            setattr(cfg.train, key[len("train."):], parse_value(text, train_types[key], key))
        elif key in data_types:
            setattr(cfg, key[len("data."):], parse_value(text, data_types[key], key))
        else:
            name = key[len("model."):] if key.startswith("model.") else key
            if name not in model_types:
                close = difflib.get_close_matches(key, valid_names(type(cfg)), n=4, cutoff=0.5)
                hint = f"; closest: {', '.join(close)}" if close else "; see minirc/train/settings.py"
                raise ValueError(f"--set: unknown setting {key!r}{hint}")
            cfg.model_overrides[name] = parse_value(text, model_types[name], key)
    if cfg.model_overrides:
        model_config(cfg, num_classes=len(cfg.classes) + 1)  # validates values: raises now, not later
    return cfg


def model_config(cfg, num_classes: int) -> MaskRCNNConfig:
    """The model config of a run: its preset with ``cfg.model_overrides`` applied."""
    try:
        return override(preset(cfg.model, num_classes=num_classes), cfg.model_overrides)
    except (ValueError, TypeError) as e:
        raise ValueError(f"--set: {e}") from None
