# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Atomic file output: the user's umask, nothing half-written, no temporary left, the old file kept on failure."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from matplotlib.figure import Figure

from monai_sre.io import files


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["022", "077", "002"])
def umask(request, monkeypatch):
    """Run the test under a given umask, and fail if the module under test calls ``os.umask`` itself."""
    old = os.umask(request.param)

    def no_flip(mask):
        raise AssertionError(f"os.umask({mask:o}) called: the process umask must never change")

    monkeypatch.setattr(os, "umask", no_flip)
    yield request.param
    monkeypatch.undo()
    os.umask(old)


def _figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


WRITERS = {
    "bytes": lambda p: files.write_bytes(p / "a.bin", b"\x00\x01"),
    "text": lambda p: files.write_text(p / "a.txt", "text\n"),
    "json": lambda p: files.write_json(p / "a.json", {"a": [1, 2]}),
    "csv": lambda p: files.write_csv(p / "a.csv", ["x", "y"], [[1, None]]),
    "png": lambda p: files.save_figure(_figure(), p / "a.png"),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_new_files_get_the_users_umask(tmp_path, umask, kind):
    out = WRITERS[kind](tmp_path / "new" / "folder")
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o777 & ~umask  # created folders too
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left


def test_replacing_a_private_file_gives_the_umask_mode_and_content(tmp_path, umask):
    out = tmp_path / "a.txt"
    out.write_text("old")
    out.chmod(0o600)
    files.write_text(out, "new")
    assert out.read_text() == "new" and out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_path_and_folder_give_library_writes_the_umask(tmp_path, umask):
    out = tmp_path / "image.nii.gz"
    with files.atomic_path(out) as tmp:
        assert tmp.name.endswith(".nii.gz") and files.is_temporary(tmp.name)  # nibabel picks the format by suffix
        nib.save(nib.Nifti1Image(np.arange(8, dtype=np.int16).reshape(2, 2, 2), np.eye(4)), tmp)
    assert np.asarray(nib.load(out).dataobj).ravel().tolist() == list(range(8))
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    folder = tmp_path / "series"
    with files.atomic_folder(folder) as tmp:
        (tmp / "slice_0.dcm").write_bytes(b"x")
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii.gz", "series"]


class Boom(RuntimeError):
    pass


def _fail_midway(f):
    f.write(b"half of the new content")
    f.flush()
    raise Boom("disk full")


def test_failure_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "report.csv"
    out.write_text("old,complete\n")
    with pytest.raises(Boom):
        files.atomic_write(out, _fail_midway)
    assert out.read_text() == "old,complete\n" and [p.name for p in tmp_path.iterdir()] == ["report.csv"]

    def rows():
        yield [1, 2]
        raise Boom("the producer failed after one row")

    with pytest.raises(Boom):
        files.write_csv(out, ["a", "b"], rows())
    with pytest.raises(ValueError, match="row 0 has 3 cells"):
        files.write_csv(out, ["a", "b"], [[1, 2, 3]])
    with pytest.raises(ValueError):
        files.write_json(out, {"x": float("nan")})  # strict JSON: refused before anything is written
    fig = _figure()

    def broken_savefig(*args, **kwargs):
        args[0].write(b"\x89PNG partial")
        raise Boom("renderer failed")

    fig.savefig = broken_savefig
    with pytest.raises(Boom):
        files.save_figure(fig, tmp_path / "plot.png")
    with pytest.raises(ValueError, match="cannot save a figure as 'xyz'"):
        files.save_figure(_figure(), tmp_path / "plot.xyz")
    assert out.read_text() == "old,complete\n" and [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_a_library_failing_inside_atomic_path_or_folder_keeps_the_old_content(tmp_path):
    out = tmp_path / "image.nii"
    out.write_bytes(b"old image")
    with pytest.raises(Boom):
        with files.atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise Boom("writer crashed")
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "old.dcm").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        with files.atomic_folder(folder):
            pass
    with pytest.raises(Boom):
        with files.atomic_folder(folder, overwrite=True) as tmp:
            (tmp / "new.dcm").write_bytes(b"new")
            raise Boom("slice 2 failed")
    assert out.read_bytes() == b"old image" and [p.name for p in folder.iterdir()] == ["old.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii", "series"]
    with files.atomic_folder(folder, overwrite=True) as tmp:
        (tmp / "new.dcm").write_bytes(b"new")
    assert [p.name for p in folder.iterdir()] == ["new.dcm"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.nii", "series"]  # the old folder is gone


def test_a_killed_writer_never_leaves_a_partial_file_under_the_final_name(tmp_path):
    """``os._exit`` in the middle of a write: the final name keeps the old content, the leftover is temporary."""
    import subprocess
    import sys

    out = tmp_path / "pred.csv"
    out.write_text("old\n")
    code = (  # the module alone (it imports nothing of the package), without torch's start-up time
        "import importlib.util, os\n"
        f"spec = importlib.util.spec_from_file_location('files', {files.__file__!r})\n"
        "files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)\n"
        "def die(f):\n    f.write(b'half'); f.flush(); os._exit(3)\n"
        f"files.atomic_write({str(out)!r}, die)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False)
    assert proc.returncode == 3
    assert out.read_text() == "old\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "pred.csv"]
    assert len(leftovers) == 1 and files.is_temporary(leftovers[0]) and leftovers[0].startswith(".pred.csv.tmp-")


def test_undecodable_file_names_are_written_as_escapes_not_lost(tmp_path):
    name = os.fsdecode(b"/data/caf\xe9/scan.nii.gz")  # a Latin-1 folder name: lone surrogates in Python
    with pytest.raises(UnicodeEncodeError):
        name.encode("utf-8")
    assert files.escape_undecodable(name) == "/data/caf\\xe9/scan.nii.gz"
    assert files.escape_undecodable("caf\u00e9 \ud800") == "caf\u00e9 \\ud800"  # not an escaped byte: code point
    assert files.escape_undecodable("plain, ünïcode") == "plain, ünïcode"
    files.write_csv(tmp_path / "p.csv", ["path", "p"], [[name, 0.5], ["ok.nii", 0.25]])
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        assert list(csv.reader(f)) == [["path", "p"], ["/data/caf\\xe9/scan.nii.gz", "0.5"], ["ok.nii", "0.25"]]
    files.write_json(tmp_path / "p.json", [{"path": name}])
    assert json.loads((tmp_path / "p.json").read_text(encoding="utf-8")) == [{"path": "/data/caf\\xe9/scan.nii.gz"}]


def test_folder_lock_serialises_writers(tmp_path):
    events: list[str] = []
    started = threading.Event()

    def other():
        with files.folder_lock(tmp_path):
            started.set()
            events.append("other in")
            time.sleep(0.3)
            events.append("other out")

    thread = threading.Thread(target=other)
    thread.start()
    started.wait(5)
    with files.folder_lock(tmp_path):  # a second open file description: flock makes it wait
        events.append("main in")
    thread.join()
    assert events == ["other in", "other out", "main in"]
