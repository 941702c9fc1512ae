"""The HTML report of a run: ``<run>/report/index.html``, one self-contained page to open in a browser.

It shows the loss and evaluation curves as plots, a table of the evaluations (the best one
marked), the sample grids of the fixed held-out examples (the method's columns: for pix2pix
input | output | target | the critic's per-patch judgement of the generated pair | of the real
pair) and an animated GIF of those samples across training. Training refreshes it whenever it
draws samples or evaluates; ``cgan report RUN_DIR`` rebuilds it, first drawing the grids of
checkpoints that have none. Every value shown is escaped, whatever file it came from.

Everything is read from the run folder (``metrics.jsonl``, ``samples/``, ``checkpoints/``), so the
page can be rebuilt from any run, finished, running or killed. Plots are inline SVG: the page
needs no script, no network and no plotting library.
"""

from __future__ import annotations

import html
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from cgan_kit.errors import CganError
from cgan_kit.outputs.log import read_metrics
from cgan_kit.outputs.metrics import LOWER_IS_BETTER
from cgan_kit.runs import checkpoint
from cgan_kit.runs.folder import COLUMNS_KEY, REPORT_DIR, SAMPLES_DIR, RunFolder
from cgan_kit.runs.validation import is_number
from cgan_kit.safe_output import check_folder, check_target, replace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GIF_NAME = "progress.gif"
GIF_FRAMES = 48           # at most; evenly spread over the run, the last one always included
GIF_WIDTH = 640           # frames are shrunk to this width at most
REFRESH_SECONDS = 30      # while training runs, the page reloads itself this often
MAX_COLUMNS = 64          # more titles than this in a grid's PNG: not ours, shown without headers
LABEL_FONT_SIZE = 13      # the GIF's step labels; smaller sizes of Pillow's font run letters together
SMOOTHING = 0.8           # the weight of the past in the loss curves' moving average (TensorBoard's slider)
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def write(run: Path, running: bool = False) -> Path:
    """(Re)write ``run/report/index.html`` and its GIF from what the run folder holds; returns the page."""
    run = Path(run)
    folder = run / REPORT_DIR
    recipe = _recipe(run)
    parts = RunFolder(run)
    check_folder(folder, [], [parts.path, parts.checkpoints, parts.samples, parts.tensorboard], "the report folder")
    path = folder / "index.html"
    for target in (path, folder / GIF_NAME):
        check_target(target, [parts.recipe, parts.metrics], "the report")
    try:
        folder.mkdir(exist_ok=True)
        rows, skipped = _metrics(run)
        samples = _samples(run)
        gif = _write_gif(folder, samples)
        page = _page(run, recipe, rows, samples, gif, running, skipped)
        replace(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    except OSError as error:
        raise CganError(f"cannot write the report in {folder}: {error.strerror or error}") from None
    if skipped and not running:  # once per rebuild by hand (or at the end of training), not at every refresh
        print(f"warning: {RunFolder(run).metrics}: skipped {_lines(skipped)} that {'are' if skipped > 1 else 'is'} "
              "not a JSON object with a step (cut short by a killed run, not UTF-8, or damaged)",
              file=sys.stderr, flush=True)
    return path


def _lines(count: int) -> str:
    return f"{count} line{'s' if count != 1 else ''}"


# ---------------------------------------------------------------------------------------------
# What the run folder holds


def _recipe(run: Path) -> dict[str, Any]:
    path = RunFolder(run).recipe
    if not path.is_file():
        raise CganError(f"{run} is not a run folder: it has no recipe.toml (give a folder made by `cgan run`)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CganError(f"{path}: not valid TOML ({error}); the run folder is damaged") from None


def _metrics(run: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``metrics.jsonl``, and how many lines were skipped: cut short by a killed run,
    not UTF-8, not a JSON object with a whole-number step."""
    rows, skipped = read_metrics(RunFolder(run).metrics)
    return [row for _, row in rows], skipped


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a finite number (not a bool, not an int too big for a float), else None."""
    return float(value) if is_number(value) else None


def _text(value: Any, limit: int = 80) -> str:
    """Any value of a JSON or TOML file as short plain text (not yet escaped)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError, RecursionError):  # ValueError: an int of more digits than str() allows
            text = f"({type(value).__name__})"
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _cell(value: Any) -> str:
    """A table cell's escaped text: finite numbers to four digits, anything else as text."""
    number = _number(value)
    if number is not None:
        return f"{number:.4g}"
    return "" if value is None else html.escape(_text(value))


def _table(recipe: dict[str, Any], name: str) -> dict[str, Any]:
    table = recipe.get(name)
    return table if isinstance(table, dict) else {}


def _samples(run: Path) -> list[tuple[int, Path]]:
    """The sample grids, oldest first: ``samples/step_XXXXXXXX.png``."""
    found = []
    for path in (run / SAMPLES_DIR).glob("step_*.png"):
        digits = path.stem.removeprefix("step_")
        if digits.isascii() and digits.isdigit():  # not "²", which isdigit() takes and int() refuses
            found.append((int(digits), path))
    return sorted(found)


def best_key(rows: list[dict[str, Any]], metric: str) -> str:
    """The log key training judges ``train.best_metric`` by: ``eval/<metric>``, or for a method with
    several directions that of its first, ``eval/<direction>/<metric>``."""
    keys = [key for row in rows for key in row if key.startswith("eval/") and key.endswith(f"/{metric}")]
    return f"eval/{metric}" if not keys or f"eval/{metric}" in keys else keys[0]


def judged_metric(metric: Any, rows: list[dict[str, Any]]) -> str:
    """``train.best_metric`` as training decided it: "auto" is "fid" where the evaluations measured
    FID (train.eval_fid), "ssim" elsewhere."""
    if not isinstance(metric, str) or metric == "auto":
        measured = any(key.startswith("eval/") and key.endswith("/fid") for row in rows for key in row)
        return "fid" if measured else "ssim"
    return metric


def best_evaluation(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The evaluation row with the best ``train.best_metric`` after step 0 (the untrained
    baseline), as training chooses ``best.safetensors``."""
    key = best_key(rows, metric)
    scored = [row for row in rows if _number(row.get(key)) is not None and row.get("step", 0) > 0]
    if not scored:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(scored, key=lambda row: _number(row[key]))


# ---------------------------------------------------------------------------------------------
# The animated GIF of the fixed samples


def _write_gif(folder: Path, samples: list[tuple[int, Path]]) -> str | None:
    """Write the GIF of the sample grids (each frame labelled with its step); returns its file name."""
    from PIL import Image, ImageDraw, ImageFont

    if not samples:
        return None
    font = ImageFont.load_default(size=LABEL_FONT_SIZE)  # the bitmap font where Pillow has no FreeType
    if len(samples) > GIF_FRAMES:  # evenly spread, first and last kept
        picks = sorted({round(i * (len(samples) - 1) / (GIF_FRAMES - 1)) for i in range(GIF_FRAMES)})
        samples = [samples[i] for i in picks]
    frames = []
    for step, path in samples:
        try:
            with Image.open(path) as image:
                frame = image.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # a grid being written right now; the next refresh has it
        if frame.width > GIF_WIDTH:
            frame = frame.resize((GIF_WIDTH, max(1, round(frame.height * GIF_WIDTH / frame.width))), Image.BILINEAR)
        labelled = Image.new("RGB", (frame.width, frame.height + 18), "white")
        labelled.paste(frame, (0, 18))
        ImageDraw.Draw(labelled).text((4, 1), f"step {step}", fill="black", font=font)
        frames.append(labelled)
    if not frames:
        return None
    durations = [400] * (len(frames) - 1) + [2000]  # linger on the newest
    replace(folder / GIF_NAME, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                                                          duration=durations, loop=0))
    return GIF_NAME


# ---------------------------------------------------------------------------------------------
# Plots as inline SVG


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round numbers spanning [low, high]."""
    if high <= low:
        return [low]
    try:
        raw = high / count - low / count  # not (high - low) / count: that overflows for spans near 1e308
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
        first = math.ceil(low / step) * step
        return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]
    except (OverflowError, ValueError, ZeroDivisionError, StopIteration):  # extreme ranges: just the ends
        return [low, high]


def _label(value: float, step: float) -> str:
    """A tick label with just enough decimals to tell it from its neighbours ``step`` away."""
    if value == 0:
        return "0"
    if not 0 <= step < math.inf or abs(value) < 1e-300 or abs(value) > 1e300:
        return f"{value:.3g}"
    decimals = 0 if step > 0 else 3
    while step > 0 and decimals < 12 and abs(round(step, decimals) - step) > 1e-9 * step:
        decimals += 1  # 2.5 needs one, 0.05 two
    if 1e-4 <= abs(value) < 1e6 and decimals <= 6:
        return f"{value:.{decimals}f}"
    return f"{value:.{max(0, math.floor(math.log10(abs(value))) - math.floor(math.log10(step or abs(value))))}e}"


def _log_ticks(low: float, high: float) -> list[float]:
    """Round numbers for a log axis over [low, high] (both > 0): about six decades at most, with 2
    and 5 between them when the axis spans less than three decades."""
    try:
        first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
        every = max(1, math.ceil((last - first) / 6))
        steps = (1,) if last - first > 3 else (1, 2, 5)
        ticks = [m * 10.0 ** e for e in range(first, last + 1, every) for m in steps]
    except (OverflowError, ValueError):  # the ends of the float range
        return [low, high]
    return [t for t in ticks if low <= t <= high] or [low, high]


def smoothed(values: list[tuple[float, float]], weight: float) -> list[tuple[float, float]]:
    """TensorBoard's smoothing: an exponential moving average, debiased so that it starts at the
    first value instead of rising from zero."""
    out, average = [], 0.0
    for i, (x, y) in enumerate(values, start=1):
        average = average * weight + (1 - weight) * y
        out.append((x, average / (1 - weight ** i)))
    return [(x, y) for x, y in out if math.isfinite(y)]  # near the float range's end the debiasing overflows


def plot(title: str, series: dict[str, list[tuple[float, float]]], mark: tuple[float, float] | None = None,
         width: int = 560, height: int = 240, scale: str = "linear", smoothing: float = 0.0) -> str:
    """A line chart of named (x, y) series as an SVG element; ``mark`` circles one point. With
    ``scale = "log"`` (all values positive) the y axis is logarithmic; with ``smoothing`` > 0 each
    series is drawn faintly and its moving average (``smoothed``) over it."""
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    if not points:
        return ""
    log = scale == "log" and all(y > 0 for _, y in points)

    def ty(y: float) -> float:  # the axis' own coordinate
        return math.log10(y) if log else y

    left, right, top, bottom = 58, 12, 26, 34
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    y_low, y_high = min(ty(p[1]) for p in points), max(ty(p[1]) for p in points)
    if x_high == x_low:
        x_high = x_low + 1
    if y_high == y_low:
        y_low, y_high = y_low - (abs(y_low) or 1) * 0.05, y_high + (abs(y_high) or 1) * 0.05

    def sx(x: float) -> float:  # halves: a span of finite values can itself overflow
        return left + (x / 2 - x_low / 2) / (x_high / 2 - x_low / 2) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y_high / 2 - ty(y) / 2) / (y_high / 2 - y_low / 2) * (height - top - bottom)

    parts = [f'<svg class="plot" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>',
             f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'class="frame"/>']
    if log:
        y_ticks = _log_ticks(10 ** y_low, 10 ** y_high)
        y_labels = [f"{y:.4g}" for y in y_ticks]
    else:
        y_ticks = _ticks(y_low, y_high)
        y_labels = [_label(y, y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 0) for y in y_ticks]
    for y, label in zip(y_ticks, y_labels):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="grid"/>'
                     f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" class="ytick">{html.escape(label)}</text>')
    x_ticks = _ticks(x_low, x_high)
    for x in x_ticks:
        label = _label(x, x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 0)
        parts.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" class="xtick">{html.escape(label)}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" class="xtick">step</text>')
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        finite = [(x, y) for x, y in values if math.isfinite(y)]
        if len(finite) == 1:
            x, y = finite[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        elif finite:
            lines = [(finite, "")]
            if smoothing > 0:  # the raw values faintly, their average over them
                lines = [(finite, ' stroke-opacity="0.25"'), (smoothed(finite, smoothing), "")]
            for line, style in lines:
                coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
                parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"{style}/>')
        parts.append(f'<text x="{width - right - 4}" y="{top + 14 + 14 * i}" class="legend" '
                     f'fill="{colour}">{html.escape(name)}</text>')
    if mark is not None:
        parts.append(f'<circle cx="{sx(mark[0]):.1f}" cy="{sy(mark[1]):.1f}" r="5" class="best"/>')
    parts.append("</svg>")
    return "".join(parts)


def _curve_style(title: str, series: dict[str, list[tuple[float, float]]]) -> tuple[str, str, float]:
    """A training curve's title, scale and smoothing: a log scale where positive values span more
    than a decade (a loss weighted 100 next to one near 1 would flatten it), smoothing where there
    are enough points for it to mean something."""
    values = [y for points in series.values() for _, y in points if math.isfinite(y)]
    log = bool(values) and min(values) > 0 and max(values) / min(values) > 10
    smooth = max((len(points) for points in series.values()), default=0) >= 20
    notes = [note for note, on in (("log scale", log), (f"smoothed {SMOOTHING:g}", smooth)) if on]
    return (f"{title} ({', '.join(notes)})" if notes else title), ("log" if log else "linear"), \
        (SMOOTHING if smooth else 0.0)


def _series(rows: list[dict[str, Any]], keys: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Each key's finite numbers by step; anything else (text, objects, NaN, huge ints) is left out."""
    return {key.split("/", 1)[-1]: [(row["step"], _number(row[key])) for row in rows
                                    if _number(row.get(key)) is not None] for key in keys}


def _plots(rows: list[dict[str, Any]], best: dict[str, Any] | None, metric: str) -> list[str]:
    keys = sorted({key for row in rows for key in row if "/" in key})
    groups = [("Losses", [k for k in keys if k.startswith("loss/")]),
              ("Critic scores (mean raw output)", [k for k in keys if k.startswith("critic/")]),
              ("Gradient norms", [k for k in keys if k.startswith("grad_norm/")]),
              ("Learning rate", [k for k in keys if k.startswith("lr/")]),
              ("Images per second", [k for k in keys if k.startswith("speed/")])]
    evaluation = [k for k in keys if k.startswith("eval/")]
    charts = []
    for key in evaluation:  # one chart each: their scales differ
        name = key.split("/", 1)[1]
        direction = "lower" if name.rsplit("/", 1)[-1] in LOWER_IS_BETTER else "higher"
        mark = (best["step"], _number(best[key])) if best is not None and key == best_key(rows, metric) else None
        charts.append(plot(f"Held-out {name} ({direction} is better)", _series(rows, [key]), mark))
    for title, group in groups:
        if group:
            series = _series(rows, group)
            title, scale, smoothing = _curve_style(title, series) if title != "Learning rate" else (title, "linear", 0)
            charts.append(plot(title, series, scale=scale, smoothing=smoothing))
    return [chart for chart in charts if chart]


# ---------------------------------------------------------------------------------------------
# The page


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.status { color: #555; } code, pre { font: 12px ui-monospace, monospace; background: #f4f4f4; }
pre { padding: 8px; overflow-x: auto; } code { padding: 1px 4px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
svg.plot { background: #fff; border: 1px solid #ddd; }
svg .title { font-size: 13px; font-weight: 600; fill: #222; }
svg .frame { fill: none; stroke: #bbb; } svg .grid { stroke: #eee; }
svg .ytick { font-size: 10px; text-anchor: end; fill: #555; }
svg .xtick { font-size: 10px; text-anchor: middle; fill: #555; }
svg .legend { font-size: 11px; text-anchor: end; } svg .best { fill: none; stroke: #e6a700; stroke-width: 2; }
table { border-collapse: collapse; } th, td { padding: 3px 10px; text-align: right; border-bottom: 1px solid #eee; }
tr.best td { background: #fff4cc; font-weight: 600; }
.grid-image { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
.legend-bar { display: inline-block; width: 160px; height: 10px; vertical-align: middle;
  background: linear-gradient(to right, #3b4cc0, #dddddd, #b40426); }
.grid-head { display: flex; max-width: 100%; font-size: 12px; color: #444; }
.grid-head span { flex: 1 1 0; min-width: 0; text-align: center; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; padding: 0 2px; }
details { margin: 6px 0; } summary { cursor: pointer; }
"""


def _src(name: str) -> str:
    """A file name as the escaped, URL-quoted value of a ``src`` attribute."""
    from urllib.parse import quote

    return html.escape(quote(name), quote=True)


def _display_width(path: Path) -> int:
    """Small grids (32 px tiles) are shown enlarged by a whole factor, to about 640 px wide."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width = image.width
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return GIF_WIDTH
    return width * max(1, GIF_WIDTH // width)


def column_titles(path: Path) -> list[str]:
    """The column titles a sample grid PNG carries (none for older runs' grids or damaged ones)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            text = image.info.get(COLUMNS_KEY, "[]")  # the chunks before the pixels: nothing is decoded
            titles = json.loads(text) if isinstance(text, str) and len(text) < 100_000 else []
    except (OSError, ValueError, SyntaxError, RecursionError, Image.DecompressionBombError):
        return []
    if not isinstance(titles, list) or len(titles) > MAX_COLUMNS or not all(isinstance(t, str) for t in titles):
        return []
    return titles


def _grid_head(path: Path, shown: int) -> str:
    """A row of column headers as wide as the grid shown (nothing where the PNG names no columns)."""
    titles = column_titles(path)
    if not titles:
        return ""
    cells = "".join(f'<span title="{html.escape(_text(title, 200))}">{html.escape(_text(title, 40))}</span>'
                    for title in titles)
    return f'<div class="grid-head" style="width: {shown}px">{cells}</div>'


def _page(run: Path, recipe: dict[str, Any], rows: list[dict[str, Any]], samples: list[tuple[int, Path]],
          gif: str | None, running: bool, skipped: int = 0) -> str:
    """The page. Every value from a file is escaped, and shown as text where it is not the type expected."""
    train = _table(recipe, "train")
    total = train.get("steps", "?")
    metric = judged_metric(train.get("best_metric", "auto"), rows)
    best = best_evaluation(rows, metric)
    step = max((row["step"] for row in rows), default=0)
    latest = checkpoint.latest(RunFolder(run).checkpoints)
    state = "training" if running else "last updated"
    updated = time.strftime("%Y-%m-%d %H:%M:%S")
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(run.name)}: cgan-kit report</title>"]
    if running:
        out.append(f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">')
    out += [f"<style>{STYLE}</style></head><body>",
            f"<h1>{e(run.name)}</h1>",
            f'<p class="status">{state}: step {step} of {e(_text(total))} &middot; {updated} &middot; '
            f'generator <code>{e(_text(_table(recipe, "generator").get("type", "?")))}</code>, critic '
            f'<code>{e(_text(_table(recipe, "critic").get("type", "?")))}</code>, data '
            f'<code>{e(_text(_table(recipe, "data").get("type", "?")))}</code></p>']
    if skipped:
        out.append(f'<p class="status">Skipped {_lines(skipped)} of <code>metrics.jsonl</code> that '
                   f"{'are' if skipped > 1 else 'is'} not a JSON object with a step (cut short by a killed run, "
                   "not UTF-8, or damaged).</p>")

    # Checkpoints and how to use them
    out.append("<h2>Checkpoints</h2><ul>")
    if latest is not None:
        out.append(f"<li>latest: <code>{e(latest.name)}</code></li>")
    best_file = RunFolder(run).best
    best_meta = checkpoint.read_meta(best_file) if best_file.is_file() else None
    if best_meta is not None:
        chosen = best_meta.get("best")
        chosen = chosen if isinstance(chosen, dict) else {}
        value = _number(chosen.get("value"))
        shown_value = f"{value:.4g}" if value is not None else e(_text(chosen.get("value", "")))
        out.append(f"<li>best by held-out {e(metric)}: <code>{e(checkpoint.BEST_NAME)}</code> (step "
                   f"{e(_text(best_meta.get('step')))}, {e(_text(chosen.get('metric', '')))} {shown_value})</li>")
    out.append(f"</ul><p>Use one: <code>cgan translate {e(str(run))} --checkpoint best IMAGES... --out DIR</code>, "
               f"<code>cgan eval {e(str(run))} --checkpoint STEP</code>. Live curves: "
               f"<code>tensorboard --logdir {e(str(run / 'tensorboard'))}</code>.</p>")

    # Curves
    charts = _plots(rows, best, metric)
    out.append("<h2>Curves</h2>")
    out.append(f'<div class="plots">{"".join(charts)}</div>' if charts else "<p>No metrics logged yet.</p>")

    # Evaluations
    evaluation_keys = sorted({k for row in rows for k in row if k.startswith("eval/")})
    evaluations = [row for row in rows if any(k in row for k in evaluation_keys)]
    out.append("<h2>Held-out evaluations</h2>")
    if evaluations:
        out.append("<table><tr><th>step</th><th>epoch</th>"
                   + "".join(f"<th>{e(k.split('/', 1)[1])}</th>" for k in evaluation_keys) + "</tr>")
        for row in evaluations:
            marked = ' class="best"' if best is not None and row is best else ""
            cells = "".join(f"<td>{_cell(row.get(k))}</td>" for k in evaluation_keys)
            epoch = row.get("epoch")
            epoch = "" if epoch is None else e(_text(epoch))  # a whole number as it is, not to four digits
            out.append(f"<tr{marked}><td>{row['step']}</td><td>{epoch}</td>{cells}</tr>")
        out.append(f"</table><p>Highlighted: the best {e(metric)} (<code>train.best_metric</code>).</p>")
    else:
        out.append("<p>No evaluation yet (<code>train.eval_every</code>; the recipe's held-out split).</p>")

    # Samples
    out.append("<h2>Samples</h2>")
    if samples:
        out.append("<p>One row per fixed held-out example, the method's columns headed above; the generators "
                   "in eval mode. A critic's column shows its judgement of each patch it sees: "
                   '<span class="legend-bar"></span> judged fake &rarr; real (the critic normalizing each batch '
                   "by its own statistics, as in training).</p>")
        newest_step, newest = samples[-1]
        shown = _display_width(newest)
        head = _grid_head(newest, shown)
        out.append(f"<h3>Step {newest_step}</h3>{head}"
                   f'<img class="grid-image" src="../{SAMPLES_DIR}/{_src(newest.name)}" width="{shown}" '
                   f'alt="samples at step {newest_step}">')
        if gif is not None:
            out.append(f'<h3>Across training</h3>{head}<img class="grid-image" src="{_src(gif)}" width="{shown}" '
                       'alt="samples across training">')
        older = samples[:-1][::-1]
        if older:
            out.append("<h3>Earlier steps</h3>")
            for sample_step, path in older:
                out.append(f"<details><summary>step {sample_step}</summary>{_grid_head(path, shown)}"
                           f'<img class="grid-image" loading="lazy" src="../{SAMPLES_DIR}/{_src(path.name)}" '
                           f'width="{shown}" '
                           f'alt="samples at step {sample_step}"></details>')
    else:
        out.append("<p>No samples yet (<code>train.sample_every</code>).</p>")

    recipe_text = (RunFolder(run).recipe).read_text(encoding="utf-8")
    out.append(f"<h2>Recipe</h2><details><summary>recipe.toml</summary><pre>{e(recipe_text)}</pre></details>")
    out.append("</body></html>\n")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Sample grids for checkpoints that have none


def draw_missing_samples(run: Path, device: str = "auto") -> list[int]:
    """Draw ``samples/step_N.png`` for every checkpoint of the run (the best one included) that has
    no grid yet (a run converted from elsewhere, samples deleted, ``train.sample_every`` sparser
    than checkpoints); returns the steps drawn."""
    import torch

    from cgan_kit.device import pick_device
    from cgan_kit.outputs.samples import fixed_samples, write_samples
    from cgan_kit.plugin_api import plugins
    from cgan_kit.runs.state import load_models

    run = Path(run)
    _recipe(run)  # a run folder, or one clear error
    have = {step for step, _ in _samples(run)}
    saved = dict(checkpoint.saved_steps(RunFolder(run).checkpoints))
    best = RunFolder(run).best
    best_step = (checkpoint.read_meta(best) or {}).get("step") if best.is_file() else None
    if isinstance(best_step, int) and not isinstance(best_step, bool) and best_step not in saved:
        saved[best_step] = best  # the best checkpoint's step may have been pruned since
    wanted = sorted((step, path) for step, path in saved.items() if step not in have)
    if not wanted:
        return []
    torch_device = pick_device(device, "--device")
    (run / SAMPLES_DIR).mkdir(exist_ok=True)
    fixed = None
    for step, path in wanted:
        recipe, _, models = load_models(path, torch_device)
        if fixed is None:  # the recipe of the run: every checkpoint shows the same examples
            fixed = fixed_samples(recipe, plugins.registry(), torch_device)
        with torch.no_grad():
            write_samples(models, fixed, torch_device, RunFolder(run), step)
    return [step for step, _ in wanted]
