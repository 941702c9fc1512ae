"""Checkpoints: one safetensors file per save, every tensor inside and JSON metadata in its header.

No pickle anywhere: loading a checkpoint can never run code. Files are written to a temporary
name in the same folder, flushed to disk and renamed, so a crash or a full disk leaves the
previous checkpoint intact and never a half-written one under a checkpoint's name.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from cgan_kit.errors import CganError

FORMAT_VERSION = 2  # 2: tensors keyed by network role (networks.<role>.*); 1 is read and migrated
META_KEY = "cgan_kit"
BEST_NAME = "best.safetensors"  # beside the step files: the run's best evaluation so far (train.best_metric)
_NAME = re.compile(r"^step_(\d+)\.safetensors$")
_TMP_PREFIX, _TMP_SUFFIX = ".", ".tmp"  # ".step_00000100.safetensors.tmp" while being written


def save(path: Path, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write tensors and metadata atomically to ``path``.

    Whatever goes wrong (a full disk, a file size limit, a vanished folder, Ctrl-C), the temporary
    file is removed and a checkpoint already at ``path`` stays as it was.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    # safetensors wants contiguous CPU tensors that share no memory with each other.
    flat = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}
    header = {META_KEY: json.dumps({"format_version": FORMAT_VERSION, **meta})}
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}{_TMP_SUFFIX}")
    try:
        tmp.unlink(missing_ok=True)  # whatever is there, a link planted in a downloaded run included
        save_file(flat, str(tmp), metadata=header)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        _remove(tmp)
        if not isinstance(error, (OSError, SafetensorError)):
            raise
        # safetensors reports I/O errors as "Error while serializing: I/O error: <reason> (os error N)".
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        reason = " ".join(reason.split()).removeprefix("Error while serializing: ")
        raise CganError(f"cannot write checkpoint {path}: {reason}; the previous checkpoint is intact "
                        "(free some disk space or choose another train.out_dir)") from None
    _fsync_dir(path.parent)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # the folder itself is gone or unwritable: nothing was left in it either


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def load(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a checkpoint: (tensors, metadata). Anything that is not one of ours is a user error.

    Only safetensors files are read, never pickles: loading a checkpoint cannot run code.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise CganError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        # load_file maps the file into memory; copies leave nothing mapped once it returns. (Tensors on
        # the map would keep a pruned checkpoint's disk space in use for as long as they live, Adam's
        # moments for the whole resumed run, and would change or fault if the file were rewritten.)
        tensors = {key: value.clone() for key, value in load_file(str(path)).items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        if is_pickle(path):
            raise CganError(f"{path} is a pickle (as torch.save writes), not a safetensors checkpoint; cgan-kit "
                            "never loads pickles, which can run code (`cgan convert-reference` turns pix2pix "
                            ".pth weights into a run)") from None
        detail = " ".join(str(error).split()).removeprefix("Error while deserializing header: ")
        raise CganError(f"{path} is not a readable safetensors checkpoint ({detail}); it is truncated or "
                        f"damaged: move it out of {path.parent} to resume from the checkpoint before it") from None
    if META_KEY not in header:
        raise CganError(f"{path} is a safetensors file but not a cgan-kit checkpoint (no {META_KEY} metadata)")
    try:
        meta = json.loads(header[META_KEY])
    except (json.JSONDecodeError, RecursionError, ValueError):  # ValueError: an integer of over 4300 digits
        meta = None
    if not isinstance(meta, dict):
        raise CganError(f"{path}: its cgan-kit metadata is not a JSON object; the file is damaged")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CganError(f"{path}: its cgan-kit metadata has no valid format_version (found {version!r}); "
                        "the file is damaged")
    if version > FORMAT_VERSION:
        raise CganError(f"{path} uses checkpoint format {version}, newer than this cgan-kit reads "
                        f"({FORMAT_VERSION}); upgrade cgan-kit")
    return tensors, meta


def read_meta(path: Path) -> dict[str, Any] | None:
    """A checkpoint's metadata without reading its tensors; None if it is missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(META_KEY, "null"))
    except (SafetensorError, OSError, ValueError, RuntimeError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def is_pickle(path: Path) -> bool:
    """Whether a file starts as torch.save's zip archive or a bare pickle (protocol 2 or later) does."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or (len(head) == 4 and head[0] == 0x80 and 2 <= head[1] <= 5)


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.safetensors"


def saved_steps(folder: Path) -> list[tuple[int, Path]]:
    """Checkpoints in a folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest(folder: Path) -> Path | None:
    steps = saved_steps(folder)
    return steps[-1][1] if steps else None


def prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints, and temporary files that a crash (``kill -9``,
    power loss) left behind in the middle of a save."""
    for _, path in saved_steps(folder)[:-keep]:
        path.unlink(missing_ok=True)
    for path in folder.glob(f"{_TMP_PREFIX}*.safetensors{_TMP_SUFFIX}"):
        _remove(path)


def split(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The tensors under ``prefix.``, with the prefix removed."""
    cut = len(prefix) + 1
    return {key[cut:]: value for key, value in tensors.items() if key.startswith(prefix + ".")}


def prefixed(prefix: str, tensors: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}.{key}": value for key, value in tensors.items()}


def optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Split an optimizer state dict into flat tensors and JSON-able parameter groups. A group's
    learning rate kept as a device tensor (a captured step reads it there) is saved as a number,
    and ``capturable`` as false: both describe this run's CUDA graph, which a resume captures anew."""
    import torch

    tensors = {f"{index}.{key}": value for index, entries in state["state"].items()
               for key, value in entries.items()}
    groups = [{k: list(v) if isinstance(v, tuple) else v.item() if isinstance(v, torch.Tensor) else v
               for k, v in group.items()} | {"capturable": False} for group in state["param_groups"]]
    return tensors, groups


def optimizer_state(tensors: dict[str, Any], groups: list[dict[str, Any]]) -> dict[str, Any]:
    """Rebuild what ``optimizer_tensors`` split."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
                                              for g in groups]}
