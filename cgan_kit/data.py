"""Feeding a dataset to the loop: an endless, resumable stream of batches.

The order of examples and the randomness of their augmentation are functions of
(seed, epoch, position) alone, so a resumed run sees exactly the batches the uninterrupted run
would have seen, with or without worker processes. One DataLoader serves the whole run: workers
start once instead of at every epoch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cgan_kit.errors import CganError


def item_seed(seed: int, epoch: int, position: int) -> int:
    """A distinct 63-bit seed for each example of each epoch."""
    return (seed * 1_000_003 + epoch * 10_007 + position) * 2654435761 % (2**63 - 1)


class SeededItems(Dataset):
    """Wraps a dataset so that each item is drawn under its own seed, leaving the caller's RNG alone."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                return self.dataset[index]
            except CganError as error:
                if torch.utils.data.get_worker_info() is None:
                    raise
                raise WorkerError(str(error)) from None


class WorkerError(CganError):
    """A user error raised in a DataLoader worker process. torch re-raises it in the main process as
    WorkerError("Caught WorkerError in DataLoader worker process N. Original Traceback ...
    cgan_kit.data.WorkerError: MESSAGE"): only MESSAGE, the one line the user needs, is kept."""

    def __init__(self, message: str):
        marker = f"{__name__}.{WorkerError.__qualname__}: "
        super().__init__(message.rpartition(marker)[2] if marker in message else message)


class EpochBatches(Sampler):
    """Endless batches of (index, seed) keys: a fresh permutation each epoch, last partial batch dropped.

    With ``world`` processes each global batch holds ``batch_size * world`` examples and process
    ``rank`` takes its own slice of it, so together they see what one process with the whole
    global batch would see. ``start_batch`` counts global batches.
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_batch: int = 0, rank: int = 0,
                 world: int = 1):
        self.size, self.batch_size, self.seed, self.start_batch = size, batch_size, seed, start_batch
        self.rank, self.global_batch = rank, batch_size * world
        self.per_epoch = size // self.global_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.start_batch
        while True:
            epoch, within = divmod(batch, self.per_epoch)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            for start in range(within * self.global_batch, self.per_epoch * self.global_batch, self.global_batch):
                first = start + self.rank * self.batch_size
                yield [(int(i), item_seed(self.seed, epoch, first + j))
                       for j, i in enumerate(order[first:first + self.batch_size])]
            batch = (epoch + 1) * self.per_epoch


class DeviceCache:
    """The training split decoded once and kept on the training device (``train.data_cache =
    "device"``): each step gathers its batch there and draws its random augmentation there,
    instead of decoding and augmenting every image again on the CPU.

    The dataset must offer ``decoded(index)`` (an item's deterministic part: {"input", "target"}
    tensors of one size for all items) and ``augment_batch(batch, seeds)`` (the random part that
    ``dataset[index]`` draws under ``torch.manual_seed(seed)``, applied to a batch on any device).
    Batches are then the very ones the DataLoader would give: same order, same crops and flips.
    """

    def __init__(self, dataset: Any, device: torch.device):
        if not (hasattr(dataset, "decoded") and hasattr(dataset, "augment_batch")):
            raise CganError(f'train.data_cache = "device": the training dataset ({type(dataset).__name__}) cannot be '
                            'cached (it offers no decoded/augment_batch); use data_cache = "none"')
        self.dataset = dataset
        items = [dataset.decoded(i) for i in range(len(dataset))]
        shapes = {(tuple(item["input"].shape), tuple(item["target"].shape)) for item in items}
        if len(shapes) > 1:
            raise CganError(f'train.data_cache = "device": the training examples, decoded before their random crop '
                            f"and flip, come in {len(shapes)} sizes (input and target shapes "
                            f'{", ".join(map(str, sorted(shapes)[:3]))}), which one cached tensor cannot hold; use '
                            'data_cache = "none", or preprocessing that resizes every image to one size first '
                            '(data.preprocess = "resize_and_crop" for the built-in datasets)')
        self.inputs = torch.stack([item["input"] for item in items]).to(device)
        self.targets = torch.stack([item["target"] for item in items]).to(device)

    @property
    def megabytes(self) -> float:
        return (self.inputs.nbytes + self.targets.nbytes) / 2**20

    def batches(self, sampler: EpochBatches) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches in the sampler's order, augmented on the device."""
        for keys in sampler:
            index = torch.tensor([i for i, _ in keys])
            if self.inputs.is_cuda:  # a copy from pageable memory would wait for the GPU's queue to drain
                index = index.pin_memory()
            index = index.to(self.inputs.device, non_blocking=True)
            batch = {"input": self.inputs.index_select(0, index), "target": self.targets.index_select(0, index)}
            yield self.dataset.augment_batch(batch, [seed for _, seed in keys])


def collate(items: list[Any]) -> Any:
    """torch's default_collate, except that examples of different sizes (a dataset whose
    preprocessing keeps each image's own size) stop with one line naming two of them, instead of
    torch's "stack expects each tensor to be equal size"."""
    first = items[0]
    if isinstance(first, Mapping):
        for key, value in first.items():
            if not isinstance(value, torch.Tensor):
                continue
            for item in items[1:]:
                other = item.get(key) if isinstance(item, Mapping) else None
                if isinstance(other, torch.Tensor) and other.shape != value.shape:
                    raise _in_worker(CganError(
                        f'data: a batch stacks examples of one size, but the "{key}" images of {_named(first)} '
                        f"and {_named(item)} are {_size(value)} and {_size(other)}; use train.batch_size = 1, or "
                        'preprocessing that crops every image to one size (data.preprocess = "resize_and_crop", '
                        '"crop" or "scale_width_and_crop" for the built-in datasets)'))
    return torch.utils.data.default_collate(items)


def _named(item: Mapping) -> str:
    name = item.get("name")
    return f'example "{name}"' if isinstance(name, str) else "another example"


def _size(tensor: torch.Tensor) -> str:
    """(C, H, W) as WxH pixels; other shapes as they are."""
    if tensor.dim() == 3:
        return f"{tensor.shape[-1]}x{tensor.shape[-2]} pixels"
    return f"of shape {list(tensor.shape)}"


def _in_worker(error: CganError) -> CganError:
    """A worker process's user error as the WorkerError that keeps its one line in the main process."""
    return WorkerError(str(error)) if torch.utils.data.get_worker_info() is not None else error


def check_batch_fits(dataset: Dataset, batch_size: int, world: int = 1) -> None:
    if len(dataset) < batch_size * world:
        processes = f" times {world} processes" if world > 1 else ""
        raise CganError(f"data: the training split has {len(dataset)} examples, fewer than "
                        f"train.batch_size = {batch_size}{processes}; lower the batch size or add data")


def auto_workers(device: torch.device) -> int:
    """Worker processes that pay: none on the CPU, where the model already uses every core."""
    if device.type == "cpu":
        return 0
    return min(4, max(1, (os.cpu_count() or 2) // 2))


def train_loader(dataset: Dataset, batch_size: int, seed: int, start_batch: int, workers: int,
                 device: torch.device, rank: int = 0, world: int = 1) -> DataLoader:
    """An endless loader of this process's training batches, from global batch ``start_batch`` on."""
    check_batch_fits(dataset, batch_size, world)
    return DataLoader(
        SeededItems(dataset),
        batch_sampler=EpochBatches(len(dataset), batch_size, seed, start_batch, rank, world),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),  # never draw from the global RNG
    )


def eval_loader(dataset: Dataset, batch_size: int, limit: int, workers: int, device: torch.device) -> DataLoader:
    """A loader over the first ``limit`` held-out examples, in order: one at a time where the
    dataset says its examples may differ in size (``sizes_vary``)."""
    subset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    if sizes_vary(dataset):
        batch_size = 1
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))


def distinct_images(dataset: Any, key: str) -> int:
    """How many of a dataset's first examples (through any Subset of a prefix around it, as
    ``eval_loader`` makes) hold distinct ``key`` images: all of them, unless the dataset says
    that its ``key`` images repeat after the first n (``distinct_images = {key: n}``, as an
    unpaired dataset's smaller domain does)."""
    count = len(dataset)
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return min(count, int(getattr(dataset, "distinct_images", {}).get(key, count)))


def sizes_vary(dataset: Any) -> bool:
    """Whether a dataset (through any Subset around it) says its examples may differ in size."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return bool(getattr(dataset, "sizes_vary", False))
