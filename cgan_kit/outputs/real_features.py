"""The Inception features of a held-out split's real images, computed once per data and cached.

FID and KID compare the features of generated images with those of real ones. The real side does
not change while a run trains, nor between runs on the same data, yet it costs as much Inception
time as the generated side: it is computed once and kept in a cache file named by a SHA-256 over
the Inception weights' identity and every real image exactly as Inception receives it (8-bit
pixels, shape, order). Other images, another size, another split, one changed pixel: another key,
so a change of data is always noticed and never served stale features.

The cache lives in ``$CGAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cgan-kit``, else
``~/.cache/cgan-kit``, under ``inception/``. A cache that cannot be written costs a warning, not
the evaluation; a damaged cache file is recomputed and replaced.
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


def cache_dir() -> Path:
    """Where cached features go (see the module docstring)."""
    explicit = os.environ.get("CGAN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cgan-kit"


def as_inception_sees(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> the 8-bit (B, C, H, W) uint8 pixels Inception's input is made from."""
    return (((images.detach().float().cpu() + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8)


class RealFeatures:
    """Features of real images by content, from memory, the cache folder or Inception."""

    def __init__(self, inception: Inception, message: Callable[[str], None], folder: Path | None = None):
        self.inception, self.message = inception, message
        self.folder = (folder or cache_dir()) / "inception"
        self.memory: dict[str, torch.Tensor] = {}
        self.warned = False

    def __call__(self, images: Callable[[], Iterable[torch.Tensor]], what: str,
                 progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """The (N, 2048) float64 features of the images that ``images()`` yields ((B, C, H, W)
        batches in [-1, 1]); ``what`` names them in messages, ``progress(done, total)`` hears
        of Inception's work on a miss. The images are read once to find their key, and once more
        only when their features are not known yet: nothing holds the whole split in memory."""
        digest, count = content_digest(), 0
        for batch in images():
            pixels = as_inception_sees(batch)
            add_to_key(digest, pixels)
            count += pixels.shape[0]
        key = digest.hexdigest()
        if key in self.memory:
            return self.memory[key]
        path = self.folder / f"{key}.safetensors"
        features = self._read(path, count)
        if features is None:
            self.message(f"Inception features of {count} real images ({what}): computed once, cached in {path.parent}")
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
            self._write(path, features)
        if len(self.memory) >= MEMORY_ENTRIES:
            self.memory.pop(next(iter(self.memory)))
        self.memory[key] = features
        return features

    def _read(self, path: Path, count: int) -> torch.Tensor | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            return None
        try:
            features = load_file(str(path))["features"]
        except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as error:
            self.message(f"warning: cached features {path} are unreadable ({error}); computing them again")
            return None
        if features.dtype != torch.float64 or tuple(features.shape) != (count, FEATURES) \
                or not torch.isfinite(features).all():
            self.message(f"warning: cached features {path} do not fit their images; computing them again")
            return None
        return features

    def _write(self, path: Path, features: torch.Tensor) -> None:
        from safetensors.torch import save_file

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace(path, lambda tmp: save_file({"features": features.contiguous()}, str(tmp),
                                                metadata={"images": str(features.shape[0])}))
        except OSError as error:
            if not self.warned:
                self.message(f"warning: cannot cache real-image features in {path.parent} ({error.strerror or error}); "
                             "they are computed again at each evaluation (set CGAN_CACHE_DIR to a writable folder)")
                self.warned = True


def content_digest() -> "hashlib._Hash":
    """A key's start: the format version and the Inception weights' identity."""
    digest = hashlib.sha256(KEY_VERSION)
    digest.update(INCEPTION_SHA1.encode())
    return digest


def add_to_key(digest: "hashlib._Hash", pixels: torch.Tensor) -> None:
    """Add a (B, C, H, W) uint8 batch, image by image (shape and pixels), to a key."""
    for image in pixels:
        digest.update(repr(tuple(image.shape)).encode())
        digest.update(image.contiguous().numpy().tobytes())
