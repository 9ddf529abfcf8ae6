"""The loss log: one record per iteration, written as CSV (for spreadsheets) and JSON (for code).

A record is a flat dict: ``iter`` (1-based, after the update), ``lr`` (the rate used by that
update), ``seconds`` (wall time since training began, across resumes), ``loss`` (the sum) and one
entry per loss term (``loss_classifier``, ``loss_box_reg``, ``loss_mask``, ``loss_objectness``,
``loss_rpn_box_reg``: torchvision's names).
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")


class LossLog:
    """A list of per-iteration records with running means and CSV/JSON writers."""

    def __init__(self, records=None):
        self.records = [dict(r) for r in (records or [])]

    def __len__(self):
        return len(self.records)

    def append(self, record: dict) -> None:
        self.records.append({k: (float(v) if not isinstance(v, (int, str)) else v) for k, v in record.items()})

    def keys(self) -> list:
        """Loss columns present, the total first then torchvision's order, then any others."""
        seen = []
        for r in self.records:
            seen.extend(k for k in r if k not in seen)
        losses = [k for k in seen if k.startswith("loss")]
        order = ["loss"] + [k for k in LOSS_KEYS if k in losses] + [k for k in losses if k not in LOSS_KEYS + ("loss",)]
        return [k for k in order if k in losses]

    def column(self, key: str) -> np.ndarray:
        return np.array([r.get(key, np.nan) for r in self.records], dtype=np.float64)

    def running_mean(self, window: int = 20) -> dict:
        """Mean of each loss over the last ``window`` records (what the progress bar shows)."""
        tail = self.records[-window:]
        return {k: float(np.mean([r[k] for r in tail if k in r])) for k in self.keys()} if tail else {}

    def write_csv(self, path) -> str:
        fields = ["iter", "lr", "seconds"] + self.keys()
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in self.records:
                w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
        return os.fspath(path)

    def write_json(self, path) -> str:
        with open(path, "w") as f:
            json.dump(self.records, f)
        return os.fspath(path)

    def write(self, directory, stem: str = "losses") -> tuple:
        """Write ``<stem>.csv`` and ``<stem>.json`` into ``directory``; return both paths."""
        os.makedirs(directory, exist_ok=True)
        return (self.write_csv(os.path.join(directory, f"{stem}.csv")),
                self.write_json(os.path.join(directory, f"{stem}.json")))

    @classmethod
    def read(cls, path) -> "LossLog":
        """Read a log written by :meth:`write_json` or :meth:`write_csv`."""
        path = os.fspath(path)
        if path.endswith(".json"):
            with open(path) as f:
                return cls(json.load(f))
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return cls([{k: (int(v) if k == "iter" else float(v)) for k, v in r.items() if v != ""} for r in rows])
