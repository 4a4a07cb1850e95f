# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Result files: CSV with one header and JSON text for nested values, JSON lists, atomic replacement."""

from __future__ import annotations

import csv
import json
import os

import pytest

from monai_sre.inference.results import write_predictions

ROWS = [
    {"path": "a.nii", "status": "ok", "error": None, "prob_x": 0.25, "original_shape": [3, 4, 5],
     "preprocessing": {"spacing": [1.0, 1.0, 1.0]}},
    {"path": "b, with comma", "status": "error", "error": "b: broken", "prob_x": None, "original_shape": None,
     "preprocessing": None, "rotation_spread": 0.5},
]  # fmt: skip


def test_csv_has_one_header_and_json_text_for_nested_values(tmp_path):
    out = write_predictions(ROWS, tmp_path / "sub" / "pred.csv")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    header = out.read_text().splitlines()[0]
    assert header == "path,status,error,prob_x,original_shape,preprocessing,rotation_spread"
    assert rows[0]["original_shape"] == "[3, 4, 5]" and json.loads(rows[0]["preprocessing"]) == ROWS[0]["preprocessing"]
    assert rows[1]["path"] == "b, with comma" and rows[1]["prob_x"] == "" and rows[0]["rotation_spread"] == ""
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_json_is_a_list_of_objects_and_replaces_the_old_file_whole(tmp_path):
    out = tmp_path / "pred.json"
    out.write_text("old")
    write_predictions(ROWS, out)
    assert json.loads(out.read_text()) == ROWS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.json"]  # no temporary file left behind


def test_unknown_suffix_or_unserialisable_rows_leave_nothing_behind(tmp_path):
    with pytest.raises(ValueError, match=r"pred.txt: the file name must end in .csv or .json"):
        write_predictions(ROWS, tmp_path / "pred.txt")
    (tmp_path / "keep.json").write_text("[]")
    with pytest.raises(ValueError):
        write_predictions([{"p": float("nan")}], tmp_path / "keep.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"] and (tmp_path / "keep.json").read_text() == "[]"
