"""Damaged and hostile run files (issue "hostile inputs", items 4 and 6): a resume drops the broken lines of
``metrics.jsonl`` with one warning, and the HTML report escapes everything and never crashes on odd values."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser


from cgan_kit.runs import checkpoint
from conftest import cgan_one_thread

# Every tag the report emits; anything else in the page came from a file and was not escaped.
REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "code", "ul", "li", "div",
               "svg", "text", "rect", "line", "polyline", "circle", "table", "tr", "th", "td", "span", "img",
               "details", "summary", "pre"}
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def warnings_about(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning" in line.lower() and name in line]


def test_a_resume_drops_torn_and_undecodable_metrics_lines_with_one_warning(half_trained, tmp_path):
    """A cut last line, non-UTF-8 bytes and a JSON array: dropped, the good rows kept, one warning."""
    run = tmp_path / "tiny"
    shutil.copytree(half_trained, run)
    metrics = run / "metrics.jsonl"
    text = metrics.read_text(encoding="utf-8")
    good = [json.loads(line) for line in text.splitlines()][:-1]
    last = text.splitlines()[-1]
    damaged = "".join(f"{line}\n" for line in text.splitlines()[:-1]).encode() + last[: len(last) // 2].encode()
    metrics.write_bytes(damaged + b"\n\xff\xfe\x80 not utf-8\n[1, 2, 3]\n")

    result = cgan_one_thread("run", "--resume", str(run), check=True)
    assert "Traceback" not in result.stderr
    assert len(warnings_about(result.stderr, "metrics.jsonl")) == 1, result.stderr
    assert "3" in warnings_about(result.stderr, "metrics.jsonl")[0]  # how many lines were dropped
    rows = [json.loads(line) for line in metrics.read_bytes().decode("utf-8").splitlines()]
    assert all(isinstance(row, dict) for row in rows)
    assert rows[: len(good)] == good  # the good rows up to the checkpoint, untouched
    assert [row["step"] for row in rows if row["step"] > 3] == [4, 6, 6]  # log every 2, evaluation at 6
    # The report of the cleaned run has nothing to skip, so nothing to say.
    assert not warnings_about(cgan_one_thread("report", str(run), "--no-samples", check=True).stderr, "metrics")


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def test_the_report_escapes_hostile_values_and_survives_odd_types(half_trained, tmp_path):
    """Hostile strings, a number too big for a float, NaN, nested objects, bad lines, odd best metadata."""
    run = tmp_path / IMG  # a run folder's name is a file name too
    shutil.copytree(half_trained, run)
    metrics = run / "metrics.jsonl"
    with open(metrics, "ab") as handle:
        handle.write(json.dumps({"step": 4, "epoch": SCRIPT, f"eval/{IMG}": 0.5, "eval/l1": {"nested": [1]},
                                 f"loss/{SCRIPT}": 1.0, "eval/ssim": True}).encode() + b"\n")
        handle.write(b'{"step": 5, "epoch": 1, "eval/l1": ' + b"1" + b"0" * 400 + b', "loss/g": NaN, '
                     b'"loss/d": 1' + b"0" * 400 + b', "eval/psnr": Infinity}\n')
        handle.write(b'{"step": 6, "epoch": {"a": [1, {"b": null}]}, "eval/l1": -Infinity, "eval/psnr": "<b>x</b>"}\n')
        handle.write(b"\xff\xfe not utf-8\n[4]\n")
    best = run / "checkpoints" / checkpoint.BEST_NAME
    tensors, meta = checkpoint.load(best)
    checkpoint.save(best, tensors, {**meta, "best": {"metric": IMG, "value": SCRIPT}})

    result = cgan_one_thread("report", str(run), "--no-samples", check=True)
    assert "Traceback" not in result.stderr
    assert len(warnings_about(result.stderr, "metrics.jsonl")) == 1, result.stderr
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    parsed = Tags()
    parsed.feed(page)
    assert parsed.tags <= REPORT_TAGS, parsed.tags - REPORT_TAGS
    assert not {name for name in parsed.attributes if name.startswith("on")}
    for payload in (SCRIPT, IMG, "<b>x</b>"):
        assert payload not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "skipped 2 lines" in page.lower()  # the page says that lines were skipped

    # Best-checkpoint metadata that is not even a dict: still a page.
    checkpoint.save(best, tensors, {**meta, "best": [SCRIPT]})
    cgan_one_thread("report", str(run), "--no-samples", check=True)
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert SCRIPT not in page and "Checkpoints" in page
