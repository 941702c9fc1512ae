"""Writing outputs without losing inputs: ``translate``, ``export`` and ``report`` refuse targets that
are their own inputs (the same file, or the folder the inputs come from) or special files (a FIFO
would block forever, a device would be written to), and replace existing outputs atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Callable

from cgan_kit.errors import CganError


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_target(target: Path, inputs: list[Path], option: str) -> None:
    """Refuse to write ``target`` where it is one of ``inputs`` or something other than a plain file."""
    for source in inputs:
        if _same(target, source) or target.resolve() == source.resolve():
            raise CganError(f"{option} {target}: that is an input of this command ({source}); write elsewhere")
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as error:
        raise CganError(f"{option} {target}: cannot be checked ({error.strerror or error})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a special file (a FIFO, a device or a socket)"
        raise CganError(f"{option} {target}: it is {kind}, not a file to replace; remove it or write elsewhere")


def check_folder(folder: Path, inputs: list[Path], protected: list[Path], option: str) -> None:
    """Refuse an output folder that is the folder an input comes from, or one of ``protected``
    (a run folder and its parts)."""
    for source in inputs:
        if _same(folder, source.parent) or folder.resolve() == source.parent.resolve():
            raise CganError(f"{option} {folder}: the inputs come from this folder ({source.name}); write the outputs "
                            "into another folder, so that neither is mixed with or written over the other")
    for kept in protected:
        if _same(folder, kept) or folder.resolve() == kept.resolve():
            raise CganError(f"{option} {folder}: that is {kept}, which this command reads; write elsewhere")
    if folder.exists() and not folder.is_dir():
        raise CganError(f"{option} {folder}: it exists and is not a folder")


def replace(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(temporary)`` in the same folder, then rename it into place:
    an existing file is replaced whole or not at all. The temporary keeps the suffix (Pillow picks
    the format by it)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        tmp.unlink(missing_ok=True)  # whatever was left there (or planted: a FIFO would block the write)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
