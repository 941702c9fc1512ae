"""#17's quality protocol: which recipe makes the best facades photos at equal compute, on a CPU.

    .venv/bin/python benchmarks/quality.py [--variants paper,stable,...] [--seeds 0,1,2] [--steps 2000]
        [--eval-every 250] [--threads auto|N] [--runs DIR] [--data ../shared/datasets/facades]
        [--out benchmarks/results/quality] [--report-only] [--time-steps 50 --time-rounds 2 | --timing-from OUT.json]
        [--results-from OUT.json]

Every variant trains labels -> photo on the facades set at 128 px (load 143, crop 128, flip; a depth-7
U-Net, the reference's unet_128, 70x70 PatchGAN), batch 1, for the same number of steps, through the
real CLI (`cgan run RECIPE --set ...`), with FID and KID measured on all 106 test images every
``--eval-every`` steps (train.eval_fid = "on": the FID extra must be installed). A variant is a shipped
recipe, optionally with one stabilizer added, so each stabilizer is screened alone on top of the paper
recipe, or a shipped recipe with one edit (the candidates). The score of a run is its last evaluation
(what `cgan eval RUN` reports: the EMA weights where the recipe keeps them); its time per step is the
median over its log intervals (evaluations excluded), which other work on the machine sways, so
``--time-steps N`` also times every variant and the paper recipe in short runs taking turns.

Runs are kept in ``--runs`` and reused: a finished run is read, not trained again, and an interrupted
one resumes. The results go to OUT.json (every run, every curve), OUT.md (the table: mean +- sd over
seeds of the final FID, KID, L1, PSNR, SSIM and time per step against the paper recipe's) and OUT.svg
(FID against steps, one line per variant run with several seeds, the mean over them), OUT_screen.svg
(the same for every variant). Record them in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

# name -> (shipped recipe, TOML appended to it, --set overrides beyond the protocol's)
STABILIZER = '\n[[stabilizers]]\ntype = "{type}"\n{settings}'
VARIANTS: dict[str, tuple[str, str, dict]] = {
    "paper": ("pix2pix_facades.toml", "", {}),
    "stable": ("pix2pix_facades_stable.toml", "", {"train.batch_size": 1}),
    "lsgan": ("pix2pix_facades_lsgan.toml", "", {}),
    "mish": ("pix2pix_facades_mish.toml", "", {}),
    "paper+label_smoothing": ("pix2pix_facades.toml",
                              STABILIZER.format(type="label_smoothing", settings="real = 0.9\n"), {}),
    "paper+instance_noise": ("pix2pix_facades.toml", STABILIZER.format(type="instance_noise", settings="sigma = 0.1\n"),
                             {}),
    "paper+history_buffer": ("pix2pix_facades.toml", STABILIZER.format(type="history_buffer", settings="size = 50\n"),
                             {}),
    "paper+ema": ("pix2pix_facades.toml", STABILIZER.format(type="ema", settings="decay = 0.999\n"), {}),
    "paper+spectral_norm": ("pix2pix_facades.toml",
                            STABILIZER.format(type="spectral_norm", settings='target = "critic"\n'), {}),
    # the stable recipe's other parts, one at a time on the paper recipe
    "paper+instance_norm": ("pix2pix_facades.toml", "", {"generator.norm": "instance"}),
    "paper+resize_conv": ("pix2pix_facades.toml", "", {"generator.upsample": "resize_conv"}),
    "paper+attention": ("pix2pix_facades.toml", "", {"generator.attention": [16]}),
    "paper+ttur": ("pix2pix_facades.toml", "", {"optim.critic_lr_factor": 2.0}),
    # the parts that helped alone, together, without the rest of the stable recipe
    "lsgan+resize_conv+ema": ("pix2pix_facades_lsgan.toml", STABILIZER.format(type="ema", settings="decay = 0.999\n"),
                              {"generator.upsample": "resize_conv"}),
    # the plateau near FID 200 may be the critic memorizing 400 photos: DiffAugment on the best recipes
    "stable+diffaugment": ("pix2pix_facades_stable.toml", STABILIZER.format(type="diffaugment", settings=""),
                           {"train.batch_size": 1}),
    "lsgan+resize_conv+ema+diffaugment": (
        "pix2pix_facades_lsgan.toml", STABILIZER.format(type="ema", settings="decay = 0.999\n")
        + STABILIZER.format(type="diffaugment", settings=""), {"generator.upsample": "resize_conv"}),
}
# learning rates x2 and L1 x2 (189.1 +- 1.6), and that winner without attention (189.7 +- 3.1 at 1.03x the
# paper's time), on which the later candidates build
LR_X2_L1_200 = [("lr = 2e-4", "lr = 4e-4"), ("weight = 100.0", "weight = 200.0")]
WINNER = LR_X2_L1_200 + [("attention = [16]", "attention = []")]
FFL_BEFORE = '[[stabilizers]]\ntype = "spectral_norm"'
FFL = '[[losses]]\ntype = "focal_frequency"\nweight = {weight}\n\n'
# candidates beyond the shipped recipes: variant -> (text in its recipe, what replaces it)
EDITS: dict[str, list[tuple[str, str]]] = {
    "stable+l1_25": [("weight = 100.0", "weight = 25.0")],
    "stable+multiscale": [('type = "patchgan"', 'type = "multiscale_patchgan"\nscales = 2')],
    "stable+feature_matching": [("[data]", '[method]\ntype = "pix2pix"\nfeature_matching = 100.0\n\n[data]')],
    "stable+lsgan": [('type = "hinge"', 'type = "lsgan"')],
    "stable+no_dropout": [('upsample = "resize_conv"', 'upsample = "resize_conv"\ndropout = 0.0')],
    # at 128 px the 70 px patches of a 3-layer critic span more than half the image; 2 layers see
    # 34 px, the paper's 70 px at 256 px in proportion
    "stable+critic_34px": [("n_layers = 3", "n_layers = 2")],
    # L1 25 scored 34 worse than 100: does more weight on L1 help at this short schedule?
    "stable+l1_200": [("weight = 100.0", "weight = 200.0")],
    # twice the learning rates (generator 4e-4, critic 8e-4): 2000 steps leave the nets far from converged
    "stable+lr_x2": [("lr = 2e-4", "lr = 4e-4")],
    # the EMA from step 250 over ~500 steps: from step 1000 over ~1000 steps it still holds 37 % of the
    # step-1000 weights at step 2000
    "stable+ema_early": [("decay = 0.999\nstart_step = 1000", "decay = 0.998\nstart_step = 250")],
    # the stable recipe without the parts that cost the most time, for a recipe within 1.3x the paper's
    # time per step: the paper's transposed convolutions in place of resize-conv, and no attention
    "stable+transpose": [('upsample = "resize_conv"', 'upsample = "transpose"')],
    "stable+no_attention": [("attention = [16]", "attention = []")],
    # resize-conv was the screen's largest single gain (-53): does bilinear resizing, which leaves no
    # 2x2 blocks for the convolution to smooth, gain more?
    "stable+bilinear": [('upsample = "resize_conv"', 'upsample = "bilinear_conv"')],
    # the two edits with the lowest final FIDs (197.7 and 196.6, one seed each), together
    "stable+lr_x2+l1_200": LR_X2_L1_200,
    # that winner (189.1 +- 1.6 over 3 seeds) without attention, for its cost; and further the same way
    "stable+lr_x2+l1_200+no_attention": WINNER,
    "stable+lr_x3+l1_300": [("lr = 2e-4", "lr = 6e-4"), ("weight = 100.0", "weight = 300.0")],
    # the no-attention winner's curves still fell at step 2000: no decay of the learning rates (the EMA
    # still averages the last ~1000 steps), and the critic at the generator's rate (TTUR off)
    "stable+lr_x2+l1_200+no_attention+constant_lr": WINNER + [('schedule = "linear_decay"\ndecay_start = 0.5',
                                                               'schedule = "constant"')],
    "stable+lr_x2+l1_200+no_attention+no_ttur": WINNER + [("critic_lr_factor = 2.0", "critic_lr_factor = 1.0")],
    "stable+lr_x2+l1_200+no_attention+critic_lr_x4": WINNER + [("critic_lr_factor = 2.0", "critic_lr_factor = 4.0")],
    # the outputs lack detail (per-image std 0.25 against the photos' 0.43): the focal frequency loss
    # beside L1, weighted so that its gradient is about L1's (weight 1000) or a third of it (300)
    "stable+lr_x2+l1_200+no_attention+ffl_1000": WINNER + [(FFL_BEFORE, FFL.format(weight=1000.0) + FFL_BEFORE)],
    "stable+lr_x2+l1_200+no_attention+ffl_300": WINNER + [(FFL_BEFORE, FFL.format(weight=300.0) + FFL_BEFORE)],
    # Adam as SAGAN and BigGAN ran it with hinge loss and spectral norm: no momentum, a shorter memory
    "stable+lr_x2+l1_200+no_attention+betas_0_0.9": WINNER + [("betas = [0.5, 0.999]", "betas = [0.0, 0.9]")],
    # spectral norm in the generator too, as SAGAN found steadier
    "stable+lr_x2+l1_200+no_attention+sn_both": WINNER + [('target = "critic"', 'target = "both"')],
}
VARIANTS.update({name: VARIANTS["stable"] for name in EDITS})
# two diagnostics outside the protocol: evaluation resizes the test images straight to 128 px, while
# the protocol trains on 128 px crops of 143 px images (objects 1.12x larger), so the winner trained at
# the test scale (load 128: no crop, flips only); and beyond the time budget, is the plateau the
# generator's capacity? (1.5x its channels)
for name, setting in {"load_128": {"data.load_size": 128}, "ngf_96": {"generator.ngf": 96}}.items():
    recipe_name, extra, sets = VARIANTS["stable"]
    VARIANTS[f"stable+lr_x2+l1_200+no_attention+{name}"] = (recipe_name, extra, {**sets, **setting})
    EDITS[f"stable+lr_x2+l1_200+no_attention+{name}"] = WINNER
MEASURES = ("fid", "kid", "l1", "psnr", "ssim")


def protocol(args: argparse.Namespace, seed: int) -> dict:
    """The --set overrides every run shares."""
    return {"data.root": args.data, "data.load_size": 143, "data.crop_size": 128, "generator.depth": 7,
            "train.steps": args.steps, "train.eval_every": args.eval_every, "train.eval_images": 106,
            "train.eval_split": "test", "train.eval_fid": "on", "train.best_metric": "fid",
            "train.sample_every": args.steps, "train.checkpoint_every": args.eval_every, "train.log_every": 50,
            "train.device": "cpu", "train.seed": seed, "train.threads": args.threads}


def recipe_text(variant: str) -> str:
    recipe_name, extra, _ = VARIANTS[variant]
    text = (RECIPES / recipe_name).read_text() + extra
    for old, new in EDITS.get(variant, []):
        if text.count(old) != 1:
            raise SystemExit(f"variant {variant}: {old!r} is not once in {recipe_name}")
        text = text.replace(old, new)
    return text


def command(args: argparse.Namespace, recipe: Path, overrides: dict) -> list[str]:
    line = [sys.executable, "-m", "cgan_kit", "run", str(recipe)]
    for key, value in overrides.items():
        line += ["--set", f"{key}={json.dumps(value)}"]
    return line


def timed(args: argparse.Namespace, variants: list[str]) -> dict[str, float]:
    """Seconds per training step of each variant, measured apart from the quality runs: short runs
    (``--time-steps``, no evaluation) taking turns, variant after variant, ``--time-rounds`` times,
    so that whatever else loads the machine weighs on each alike; the median over every round's
    log intervals but each run's first (warm-up)."""
    folder = Path(args.runs) / "timing"
    folder.mkdir(parents=True, exist_ok=True)
    intervals: dict[str, list[float]] = {variant: [] for variant in variants}
    for round_ in range(args.time_rounds):
        for variant in variants:
            name = f"{variant.replace('+', '_')}_round{round_}"
            shutil.rmtree(folder / name, ignore_errors=True)
            recipe = folder / f"{name}.toml"
            recipe.write_text(recipe_text(variant))
            overrides = {**protocol(args, 0), **VARIANTS[variant][2], "train.steps": args.time_steps,
                         "train.eval_every": 0, "train.eval_images": 1, "train.eval_fid": "off",
                         "train.best_metric": "l1", "train.sample_every": 0, "train.log_every": 10,
                         "train.checkpoint_every": args.time_steps, "train.out_dir": str(folder), "train.name": name}
            subprocess.run(command(args, recipe, overrides), check=True, cwd=ROOT, capture_output=True)
            rates = [row["speed/images_per_s"] for row in rows_of(folder / name) if "speed/images_per_s" in row]
            intervals[variant] += [1 / rate for rate in rates[1:]]
    return {variant: statistics.median(values) for variant, values in intervals.items() if values}


def train(args: argparse.Namespace, variant: str, seed: int) -> Path:
    """Train (or resume, or reuse) one run; its folder."""
    recipe_name, extra, sets = VARIANTS[variant]
    name = f"{variant.replace('+', '_')}_seed{seed}"
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    recipe = runs / f"{name}.toml"
    recipe.write_text(recipe_text(variant))
    folder = runs / name
    if finished(folder, args.steps):
        return folder
    overrides = {**protocol(args, seed), **sets, "train.out_dir": str(runs), "train.name": name}
    line = command(args, recipe, overrides)
    if (folder / "checkpoints").is_dir():
        line[4:5] = ["--resume", str(folder)]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(line[3:5])}", file=sys.stderr, flush=True)
    record_host(runs / f"{name}.hosts.json")
    subprocess.run(line, check=True, cwd=ROOT)
    return folder


def host() -> dict:
    """The CPU a run trains on and the precision train.precision = "auto" picks there (bf16 autocast
    where the CPU computes bf16 in hardware, else fp32): runs on different CPUs round differently."""
    import torch

    from cgan_kit.device import resolve_precision

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    dtype = resolve_precision("auto", torch.device("cpu"))
    return {"cpu": cpu, "cores": os.cpu_count(), "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def record_host(path: Path) -> None:
    """Add this machine to the hosts a run trained on (a resumed run may have moved)."""
    hosts = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps([*hosts, host()], indent=1) + "\n")


def rows_of(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def finished(folder: Path, steps: int) -> bool:
    return any(row.get("step") == steps and "eval/fid" in row for row in rows_of(folder))


def summary(folder: Path, variant: str, seed: int) -> dict:
    rows = rows_of(folder)
    evaluations = [row for row in rows if "eval/fid" in row]
    last, best = evaluations[-1], min(evaluations[1:] or evaluations, key=lambda row: row["eval/fid"])
    timed, previous, per_step = [r for r in rows if "speed/images_per_s" in r], 0, []
    evaluated = {row["step"] for row in evaluations}
    for row in timed:  # batch 1: each logged rate covers the steps since the previous log line
        if previous not in evaluated:  # an evaluation (and checkpoint) at a step counts in the next interval
            per_step.append(1 / row["speed/images_per_s"])
        previous = row["step"]
    return {"variant": variant, "seed": seed, "run": str(folder), "step": last["step"],
            **{m: last[f"eval/{m}"] for m in MEASURES},
            "best_fid": best["eval/fid"], "best_fid_step": best["step"],
            "s_per_step": statistics.median(per_step) if per_step else None,
            "fid_curve": [[row["step"], row["eval/fid"]] for row in evaluations], **hosts_of(folder)}


def hosts_of(folder: Path) -> dict:
    path = folder.with_name(folder.name + ".hosts.json")
    if not path.is_file():
        return {}
    hosts = json.loads(path.read_text())
    return {"precision": "+".join(dict.fromkeys(h["precision"] for h in hosts)),
            "cpu": " + ".join(dict.fromkeys(h["cpu"] for h in hosts))}


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} +- {statistics.stdev(values):.2g}"


def table(results: list[dict], timing: dict[str, float] | None = None) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in results))
    paper = [r["s_per_step"] for r in results if r["variant"] == "paper" and r["s_per_step"]]
    timing = timing or {}
    lines = ["| variant | seeds | precision | FID | KID | L1 | PSNR | SSIM | best FID (step) | s/step "
             "| x paper's time | x paper's time, timed in turns |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for variant in variants:
        runs = [r for r in results if r["variant"] == variant]
        cells = [spread([r[m] for r in runs]) for m in MEASURES]
        best = ", ".join(f"{r['best_fid']:.1f} ({r['best_fid_step']})" for r in runs)
        times = [r["s_per_step"] for r in runs if r["s_per_step"]]
        ratio = f"{statistics.mean(times) / statistics.mean(paper):.2f}" if times and paper else "?"
        seeds = ",".join(str(r["seed"]) for r in runs)
        in_turns = (f"{timing[variant] / timing['paper']:.2f}" if variant in timing and "paper" in timing else "")
        precision = ",".join(r.get("precision", "?") for r in runs)
        lines.append(f"| {variant} | {seeds} | {precision} | {' | '.join(cells)} | {best} | "
                     f"{statistics.mean(times) if times else float('nan'):.3f} | {ratio} | {in_turns} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="paper,stable", help=f"Comma-separated, of: {', '.join(VARIANTS)}.")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--runs", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "cgan-quality"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "facades"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality"))
    parser.add_argument("--threads", default="auto",
                        help='train.threads: "auto", or a number (1 for runs side by side, one per core).')
    parser.add_argument("--report-only", action="store_true", help="Summarize the finished runs; train nothing.")
    parser.add_argument("--time-steps", type=int, default=0,
                        help="Also time each variant (and the paper recipe) in short runs of this many steps, "
                             "taking turns, for the time-per-step ratio under equal load (0: do not).")
    parser.add_argument("--time-rounds", type=int, default=2)
    parser.add_argument("--timing-from", metavar="OUT.json", help="Take the timing of an earlier --time-steps run.")
    parser.add_argument("--results-from", metavar="OUT.json",
                        help="Also report the runs recorded in an earlier OUT.json whose folders are not in --runs "
                             "(kept figures of runs trained on another machine or in a folder since deleted).")
    args = parser.parse_args()
    args.data = str(Path(args.data).resolve())
    args.threads = int(args.threads) if args.threads.isdigit() else args.threads
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    results = []
    if args.results_from:
        wanted = {(v, int(s)) for v in args.variants.split(",") for s in args.seeds.split(",")}
        results = [run for run in json.loads(Path(args.results_from).read_text())["runs"]
                   if (run["variant"], run["seed"]) in wanted
                   and not finished(Path(args.runs) / f"{run['variant'].replace('+', '_')}_seed{run['seed']}",
                                    args.steps)]
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in args.variants.split(","):
            folder = Path(args.runs) / f"{variant.replace('+', '_')}_seed{seed}"
            if not args.report_only:
                folder = train(args, variant, seed)
            if finished(folder, args.steps) and not any((r["variant"], r["seed"]) == (variant, seed)
                                                         for r in results):
                results.append(summary(folder, variant, seed))
                write(args, results)  # every finished run is recorded as it finishes
    order = args.variants.split(",")
    results.sort(key=lambda run: (order.index(run["variant"]), run["seed"]))
    timing = None
    if args.timing_from:
        earlier = json.loads(Path(args.timing_from).read_text())
        timing, args.time_steps, args.time_rounds = (earlier["timed_s_per_step"], earlier["timed_steps"],
                                                     earlier["timed_rounds"])
    elif args.time_steps:
        timing = timed(args, list(dict.fromkeys(["paper", *order])))
    write(args, results, timing)
    print(table(results, timing))


def write(args: argparse.Namespace, results: list[dict], timing: dict[str, float] | None = None) -> None:
    from cgan_kit.outputs.report import STYLE, plot

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"protocol": {k: v for k, v in protocol(args, 0).items() if k not in ("data.root", "train.seed")},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {__import__('torch').__version__}",
            "date": time.strftime("%Y-%m-%d")}
    timed_steps = {"timed_s_per_step": timing, "timed_steps": args.time_steps,
                   "timed_rounds": args.time_rounds} if timing else {}
    out.with_suffix(".json").write_text(json.dumps({**meta, **timed_steps, "runs": results}, indent=1) + "\n")
    out.with_suffix(".md").write_text(table(results, timing))
    # One line per variant, the mean over its seeds at each evaluation: one per run is unreadable.
    curves: dict[str, dict[int, list[float]]] = {}
    for r in results:
        for s, f in r["fid_curve"]:
            curves.setdefault(r["variant"], {}).setdefault(s, []).append(f)
    seeds = {variant: sum(r["variant"] == variant for r in results) for variant in curves}
    label = {variant: f"{variant} ({count} seeds)" if count > 1 else variant for variant, count in seeds.items()}
    series = {label[variant]: [(s, statistics.mean(fids)) for s, fids in sorted(steps.items())]
              for variant, steps in curves.items()}
    # Two charts: the variants run with several seeds alone (few lines, the legend clear of them), and
    # every variant (the screen; its legend crosses the lowest lines).
    several = {label[variant]: series[label[variant]] for variant in curves if seeds[variant] > 1}
    charts = {out.with_suffix(".svg"): ("FID against steps, the variants run with several seeds (mean)", several),
              out.with_name(out.name + "_screen.svg"): ("FID against steps, every variant (mean over seeds)", series)}
    style = "".join(line + "\n" for line in STYLE.splitlines() if line.startswith("svg"))  # the report's chart rules
    for path, (title, lines) in charts.items():
        chart = plot(f"{title}; 106 facades test photos, 128 px", lines, width=760,
                     height=max(360, 60 + 14 * len(lines)))
        if chart:  # else no finished run yet (a timing alone)
            opening = chart.index(">") + 1
            path.write_text(chart[:opening] + f"<style>{style}</style>" + chart[opening:] + "\n")


if __name__ == "__main__":
    main()
