# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""Atomic file output: every file the package writes goes through here.

A file is written under a temporary name in its target folder (``.<name>.tmp-<random><suffix>``) and renamed over
the target with ``os.replace`` only when complete, so a reader sees the old file or the new one, never half of one,
and a failure midway leaves the old file as it was and no temporary behind. Files are created with ``open``, so
they get the user's umask like any other file the user makes (``0o666 & ~umask``); the process umask is never
changed. Text that cannot be encoded (file names that are not valid UTF-8 reach Python as lone surrogates) is
written with backslash escapes instead of failing after the work that produced it.

Writers: :func:`write_bytes`, :func:`write_text`, :func:`write_json`, :func:`write_csv`, :func:`save_figure`; for
libraries that write to a path themselves (nibabel, pydicom), :func:`atomic_path` and :func:`atomic_folder`.
:func:`folder_lock` serialises writers of one folder across processes (e.g. DDP ranks).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMP_MARKER",
    "atomic_folder",
    "atomic_path",
    "atomic_write",
    "escape_undecodable",
    "folder_lock",
    "is_temporary",
    "save_figure",
    "write_bytes",
    "write_csv",
    "write_json",
    "write_text",
]

#: Infix of temporary names (``.<final name>.tmp-<random>[suffix]``): a name with it is never a finished file.
TEMP_MARKER = ".tmp-"


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of this module's temporary names (left behind by a killed process).

    Args:
        name: a base name.

    Returns:
        True for ``.<name>.tmp-<random>...`` names.
    """
    return name.startswith(".") and TEMP_MARKER in name


def _temp_sibling(path: Path) -> Path:
    # Keep the final suffixes (".nii.gz") so libraries that choose the format by suffix write the right one.
    suffix = "".join(Path(path.name).suffixes[-2:])
    return path.parent / f".{path.name}{TEMP_MARKER}{uuid.uuid4().hex[:12]}{suffix}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; it replaces ``path`` when the block ends without error.

    For libraries that write to a file name themselves, e.g. ``with atomic_path(p) as tmp: nib.save(image, tmp)``.
    The temporary name keeps ``path``'s suffixes. Missing parent folders are created.

    Args:
        path: the final file.
        durable: ``fsync`` the file before the rename, so that even a power loss leaves the old or the new file.
            Exports of many small files that a re-run checks anyway may skip it.

    Yields:
        the temporary path (not yet created).

    Raises:
        OSError: when the folder cannot be created or written, or the writer made no file at the temporary path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder to fill with ``folder``'s files; it becomes ``folder`` when the block ends without error.

    With ``overwrite``, an existing ``folder`` is moved aside just before the swap and deleted after it, and put
    back if the swap fails, so ``folder`` is always either the old complete folder or the new one.

    Args:
        folder: the final folder.
        overwrite: replace an existing ``folder``.

    Yields:
        the temporary folder (created, empty).

    Raises:
        FileExistsError: if ``folder`` exists and ``overwrite`` is False.
        OSError: when the folder cannot be created or renamed.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists (pass overwrite=True to replace it)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(folder)
    old = None
    try:
        tmp.mkdir()
        yield tmp
        if folder.exists():  # overwrite: move the old folder aside, then swap in the new one
            old = _temp_sibling(folder)
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        _remove(tmp)
        if old is not None and not folder.exists():
            os.replace(old, folder)  # put the old folder back
            old = None
        raise
    finally:
        if old is not None:
            _remove(old)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], durable: bool = True) -> Path:
    """Write ``path`` atomically through ``write(binary_file)``.

    Args:
        path: the final file; missing parent folders are created.
        write: called once with the temporary file open for binary writing.
        durable: ``fsync`` before the rename (see :func:`atomic_path`).

    Returns:
        the path written.

    Raises:
        OSError: when the folder cannot be written; anything ``write`` raises (the old file is then kept).
    """
    path = Path(path)
    with atomic_path(path, durable=False) as tmp:
        with open(tmp, "xb") as f:  # open(), not mkstemp: the file gets the user's umask, not mode 0600
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    return path


def write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: the final file; missing parent folders are created.
        data: the content.
        durable: ``fsync`` before the rename.

    Returns:
        the path written.

    Raises:
        OSError: when the folder cannot be written.
    """
    return atomic_write(path, lambda f: f.write(data), durable=durable)


def escape_undecodable(text: str) -> str:
    """``text`` with undecodable file-name bytes shown as ``\\xNN`` escapes: valid Unicode for files and terminals.

    Python holds a file name that is not valid UTF-8 as a string with lone surrogates (``surrogateescape``); such a
    string cannot be written as UTF-8. This gives the original bytes as escapes (``caf\\xe9.nii.gz``), as ``ls -b``
    shows them, and leaves every other string unchanged.

    Args:
        text: any string, e.g. a path from ``os.listdir``.

    Returns:
        a string that encodes as UTF-8.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes: escape the code points
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def write_text(path: str | os.PathLike, text: str, durable: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically as UTF-8; undecodable file-name bytes become ``\\xNN`` escapes.

    Args:
        path: the final file; missing parent folders are created.
        text: the content, written as given (no newline translation).
        durable: ``fsync`` before the rename.

    Returns:
        the path written.

    Raises:
        OSError: when the folder cannot be written.
    """
    return write_bytes(path, escape_undecodable(text).encode("utf-8"), durable=durable)


def write_json(
    path: str | os.PathLike, obj: Any, indent: int | None = 2, durable: bool = True, ensure_ascii: bool = False
) -> Path:
    """Write ``obj`` as strict JSON (no NaN or infinity), UTF-8, with a final newline, atomically.

    Strings holding undecodable file-name bytes are written with ``\\xNN`` escapes (see :func:`escape_undecodable`).

    Args:
        path: the final file; missing parent folders are created.
        obj: JSON-ready values (dicts, lists, strings, finite numbers, booleans, ``None``).
        indent: ``json.dumps`` indentation.
        durable: ``fsync`` before the rename.
        ensure_ascii: write every non-ASCII character as a ``\\uXXXX`` escape (the model zoo's JSON format, which
            a bundle's ``metadata.json`` must keep).

    Returns:
        the path written.

    Raises:
        ValueError: for NaN or infinite numbers (before anything is written).
        TypeError: for values JSON cannot hold (before anything is written).
        OSError: when the folder cannot be written.
    """
    text = json.dumps(_escape_strings(obj), indent=indent, allow_nan=False, ensure_ascii=ensure_ascii)
    return write_text(path, text + "\n", durable=durable)


def _escape_strings(obj: Any) -> Any:
    """``obj`` with :func:`escape_undecodable` applied to every string, keys included."""
    if isinstance(obj, str):
        return escape_undecodable(obj)
    if isinstance(obj, dict):
        return {_escape_strings(k): _escape_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_escape_strings(v) for v in obj]
    return obj


def write_csv(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]], durable: bool = True
) -> Path:
    """Write a CSV file (a header line, then one line per row; ``None`` as an empty cell) atomically.

    Args:
        path: the final file; missing parent folders are created.
        header: the column names.
        rows: one sequence of cells per line, in ``header`` order.
        durable: ``fsync`` before the rename.

    Returns:
        the path written.

    Raises:
        ValueError: when a row has more cells than ``header`` has columns (before anything is written).
        OSError: when the folder cannot be written.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) > len(header):
            raise ValueError(f"{path}: row {i} has {len(row)} cells but the header has {len(header)} columns")
        writer.writerow(["" if v is None else v for v in row])
    return write_text(path, buffer.getvalue(), durable=durable)


def save_figure(
    fig: Any, path: str | os.PathLike, dpi: int = 120, format: str | None = None, durable: bool = True
) -> Path:
    """Save a matplotlib figure atomically (``.png``, ``.pdf``, ``.svg``, ...).

    Args:
        fig: a ``matplotlib.figure.Figure``.
        path: the final file; missing parent folders are created.
        dpi: resolution of raster formats.
        format: the file format; default ``path``'s suffix.
        durable: ``fsync`` before the rename.

    Returns:
        the path written.

    Raises:
        ValueError: when the format is not one matplotlib writes.
        OSError: when the folder cannot be written.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        raise ValueError(f"{path}: cannot save a figure as {fmt or 'a file without suffix'!r}")
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi), durable=durable)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (e.g. DDP ranks writing one export); a no-op where unsupported.

    Args:
        folder: an existing folder.

    Yields:
        nothing; the lock is held until the block ends.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. a file system without flock on folders
            pass
        yield
    finally:
        os.close(fd)  # releases the lock
