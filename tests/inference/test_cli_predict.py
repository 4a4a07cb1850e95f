# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""``monai-sre predict``: output files, printed summary and exit codes."""

from __future__ import annotations

import csv
import json

import pytest

from monai_sre.cli import main
from tests.inference.clinical_data import CLASS_NAMES, CT_SERIES, NIBABEL_DATA

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")


def test_predict_writes_csv_and_exits_1_when_an_input_failed(bundle3d, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    code = main(
        ["predict", str(CT_SERIES), str(NIBABEL_DATA / "example4d.nii.gz"), "--bundle", str(bundle3d),
         "--output", str(out), "--rotation-check", "--modality", "CT", "--hu-window", "-500", "500"]
    )  # fmt: skip
    assert code == 1
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert {f"prob_{n}" for n in CLASS_NAMES} | {"rotation_spread", "checkpoint_sha256"} <= set(rows[0])
    assert json.loads(rows[0]["preprocessing"])["hu_window"] == [-500.0, 500.0]
    assert "4D NIfTI" in rows[1]["error"] and rows[1]["pred_label"] == ""
    captured = capsys.readouterr()
    assert f"ok     {CT_SERIES} [" in captured.out and "error  " in captured.out
    assert "2 input(s): 1 predicted, 1 failed" in captured.err


def test_predict_exits_0_when_all_succeed_and_2_for_a_missing_bundle(bundle3d, tmp_path, capsys):
    out = tmp_path / "pred.json"
    assert main(["predict", str(CT_SERIES), "--bundle", str(bundle3d), "--output", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["status"] == "ok" and row["pred_label"] in CLASS_NAMES and row["original_shape"] == [16, 16, 5]
    assert main(["predict", str(CT_SERIES), "--bundle", str(tmp_path / "nowhere")]) == 2
    assert "monai-sre predict: error: bundle" in capsys.readouterr().err


def test_file_names_that_are_not_utf8_keep_every_row(bundle3d, tmp_path, capsys):
    """A Latin-1 file name (lone surrogates in Python) is written with \\x escapes; no good row is lost."""
    import os
    import shutil

    folder = tmp_path / os.fsdecode(b"caf\xe9")  # e.g. a study folder exported on an old Windows PACS
    folder.mkdir()
    latin1 = folder / os.fsdecode(b"s\xe9rie.nii")
    shutil.copy(NIBABEL_DATA / "anatomical.nii", folder / "plain.nii")
    shutil.copy(NIBABEL_DATA / "anatomical.nii", latin1)
    escaped_folder = str(folder).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    escaped = f"{escaped_folder}/s\\xe9rie.nii"
    assert escaped_folder.endswith("/caf\\xe9")
    for out in (tmp_path / "pred.csv", tmp_path / "pred.json"):
        code = main(["predict", str(latin1), str(CT_SERIES), str(folder / "plain.nii"), "--bundle", str(bundle3d),
                     "--output", str(out)])  # fmt: skip
        assert code == 0
        text = out.read_text(encoding="utf-8")  # valid UTF-8
        rows = list(csv.DictReader(text.splitlines())) if out.suffix == ".csv" else json.loads(text)
        assert [r["path"] for r in rows] == [escaped, str(CT_SERIES), f"{escaped_folder}/plain.nii"]
        assert [r["status"] for r in rows] == ["ok"] * 3
        # the same image under both names: the same prediction
        assert rows[0][f"prob_{CLASS_NAMES[0]}"] == rows[2][f"prob_{CLASS_NAMES[0]}"]
    captured = capsys.readouterr()
    assert f"ok     {escaped}: " in captured.out and "3 input(s): 3 predicted, 0 failed" in captured.err
