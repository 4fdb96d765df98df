"""Atomic directory writes: build in a temp folder, then swap it in, so a kill mid-save
leaves the previous version intact."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(directory: str | os.PathLike):
    """`with atomic_dir(d) as tmp:` write into tmp; on success tmp replaces d."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp-save")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)  # the only moment the folder changes: one rename
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(directory: str | os.PathLike) -> None:
    """After a kill between the two renames, the previous version sits at <dir>.old: put it back."""
    directory = Path(directory)
    old = directory.with_name(directory.name + ".old")
    if not directory.exists() and old.exists():
        os.replace(old, directory)
