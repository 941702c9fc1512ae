"""The device and the precision a run or a command computes on: one owner for both choices."""

from __future__ import annotations

import torch

from cgan_kit.errors import CganError


def pick_device(name: str, key: str = "train.device") -> torch.device:
    """The torch device ``name`` asks for ("auto": CUDA when present, else the CPU); ``key`` is the
    setting or option it came from, for the error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CganError(f'{key}: "{name}" is not a device; use "auto", "cpu" or "cuda"') from None
    if device.type not in ("cpu", "cuda"):
        raise CganError(f'{key}: "{name}" is a {device.type} device, which cgan-kit does not train or translate on; '
                        'use "auto", "cpu" or "cuda"')
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CganError(f'{key}: "{name}" asked for, but torch sees no CUDA GPU; use "auto" or "cpu"')
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CganError(f'{key}: "{name}" asked for, but torch sees {torch.cuda.device_count()} CUDA GPU(s) '
                        '(numbered from 0)')
    return device


def memory_bytes(device: torch.device) -> int | None:
    """The memory a run on ``device`` can have at most: the GPU's, or the host's (its cgroup limit
    where that is lower); None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    found = []
    try:
        import os

        found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit, encoding="ascii") as handle:
                text = handle.read().strip()
        except OSError:
            continue
        if text.isdigit():
            found.append(int(text))
    return min(found) if found else None


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` (None: full fp32). "auto" is bf16 where the
    hardware computes it: CUDA GPUs that support it, and CPUs with AVX512-BF16 or AMX, where it
    made the paper's step 27-35 % faster with no loss of quality (benchmarks/RESULTS.md)."""
    if name == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            native = device.type == "cpu" and cpu_native_bf16()
        name = "bf16" if native else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Elsewhere torch emulates
    bf16 convolutions: measured 9.3 s per step against 0.33 s with hardware bf16 (pix2pix, 128 px)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def precision_warning(amp_dtype: torch.dtype | None, device: torch.device) -> str | None:
    """A warning for a precision that will be slow on this device, or None."""
    if device.type == "cpu" and amp_dtype == torch.bfloat16 and not cpu_native_bf16():
        return ('warning: train.precision = "bf16" on a CPU without hardware bf16 (no AVX512-BF16 or AMX): '
                'torch emulates it, many times slower than fp32; use "fp32" (or "auto")')
    return None
