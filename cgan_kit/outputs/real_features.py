"""The Inception features of a held-out split's real images, computed once per data and cached.

FID and KID compare the features of generated images with those of real ones. The real side does
not change while a run trains, nor between runs on the same data, yet it costs as much Inception
time as the generated side: it is computed once and kept in a cache file named by a SHA-256 over
the Inception weights' identity and every real image exactly as Inception receives it (8-bit
pixels, shape, order). Other images, another size, another split, one changed pixel: another key,
so a change of data is always noticed and never served stale features.

The cache lives in ``$CGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cgan-kit``, else
``~/.cache/cgan-kit``, under ``inception/``; the key also names the kind of device (CPU, CUDA)
that computed the features. A cache that cannot be written costs a warning, not the evaluation
(a process still keeps what it computed); a damaged cache file is computed again and replaced.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

import torch

from cgan_kit.errors import CganError
from cgan_kit.outputs.metrics import FEATURES, INCEPTION_SHA1, Inception
from cgan_kit.safe_output import replace

KEY_VERSION = b"cgan-kit real inception features 1"
MEMORY_ENTRIES = 8  # keys kept in this process: a run's held-out sides, without a file read per evaluation


def cache_dir() -> Path | None:
    """Where cached features go (see the module docstring); None where no home folder is known."""
    explicit = os.environ.get("CGAN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME, and a user without a passwd entry
            return None
    return Path(base) / "cgan-kit"


def as_inception_sees(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> the 8-bit (B, C, H, W) uint8 pixels Inception's input is made from."""
    return (((images.detach().float().cpu() + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8)


class RealFeatures:
    """Features of real images by content, from memory, the cache folder or Inception."""

    def __init__(self, inception: Inception, message: Callable[[str], None], folder: Path | None = None):
        self.inception, self.message = inception, message
        base = folder or cache_dir()
        self.folder = base / "inception" if base is not None else None
        self.memory: dict[str, torch.Tensor] = {}
        self.warned = False
        if self.folder is None:
            self.warn("no home folder to cache real-image features in")

    def __call__(self, images: Callable[[], Iterable[torch.Tensor]], what: str,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """The (N, 2048) float64 features of the images that ``images()`` yields ((B, C, H, W)
        batches in [-1, 1]); ``what`` names them in messages, ``progress(done, total)`` hears
        of Inception's work on a miss. The images are read once to find their key, and once more
        only when their features are not known yet: nothing holds the whole split in memory."""
        digest, count = content_digest(self.inception.device), 0
        for batch in images():
            pixels = as_inception_sees(batch)
            add_to_key(digest, pixels)
            count += pixels.shape[0]
        key = digest.hexdigest()
        if key in self.memory:
            return self.memory[key]
        path = self.folder / f"{key}.safetensors" if self.folder is not None else None
        features = self._read(path, count) if path is not None else None
        if features is None:
            where = f"cached in {path.parent}" if path is not None else "not cached"
            self.message(f"Inception features of {count} real images ({what}): computed once, {where}")
            chunks, done = [], 0
            for batch in images():
                chunks.append(self.inception(as_inception_sees(batch).float() / 255))
                done += batch.shape[0]
                if progress is not None:
                    progress(done, count)
            features = torch.cat(chunks) if chunks else torch.empty(0, FEATURES, dtype=torch.float64)
            if features.shape[0] != count:
                raise CganError(f"the real images ({what}) changed while their features were computed: "
                                f"{count} images, then {features.shape[0]}")
            if path is not None:
                self._write(path, features)
        if len(self.memory) >= MEMORY_ENTRIES:
            self.memory.pop(next(iter(self.memory)))
        self.memory[key] = features
        return features

    def _read(self, path: Path, count: int) -> torch.Tensor | None:
        """The cached features of ``count`` images at ``path``, or None (absent, or not fit to use:
        they are then computed again and the file replaced)."""
        from safetensors import SafetensorError, safe_open

        if not path.is_file():  # not a FIFO or a device either
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:  # the header first: nothing large is read blind
                names = list(handle.keys())
                shape = handle.get_slice("features").get_shape() if names == ["features"] else None
                if shape != [count, FEATURES]:
                    raise ValueError(f"it holds {names} of shape {shape}, not features of {count} images")
                features = handle.get_tensor("features")
        except (OSError, SafetensorError, ValueError, RuntimeError) as error:
            self.message(f"warning: cached features {path} are unusable ({error}); computing them again")
            return None
        if features.dtype != torch.float64 or not torch.isfinite(features).all():
            self.message(f"warning: cached features {path} are not finite float64 features; computing them again")
            return None
        return features

    def _write(self, path: Path, features: torch.Tensor) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace(path, lambda tmp: save_file({"features": features.contiguous()}, str(tmp),
                                                metadata={"images": str(features.shape[0])}))
        except (OSError, SafetensorError) as error:
            self.warn(f"cannot write {path.parent} ({getattr(error, 'strerror', None) or error})")

    def warn(self, why: str) -> None:
        if not self.warned:
            self.message(f"warning: {why}: the real images' Inception features are computed again by each "
                         "process that evaluates (set CGAN_CACHE_DIR to a writable folder)")
            self.warned = True


def content_digest(device: torch.device) -> "hashlib._Hash":
    """A key's start: the format version, the Inception weights' identity and the kind of device
    that computes the features (a GPU's convolutions round otherwise than a CPU's)."""
    digest = hashlib.sha256(KEY_VERSION)
    digest.update(INCEPTION_SHA1.encode())
    digest.update(torch.device(device).type.encode())
    return digest


def add_to_key(digest: "hashlib._Hash", pixels: torch.Tensor) -> None:
    """Add a (B, C, H, W) uint8 batch, image by image (shape and pixels), to a key."""
    for image in pixels:
        digest.update(repr(tuple(image.shape)).encode())
        digest.update(image.contiguous().numpy().tobytes())
