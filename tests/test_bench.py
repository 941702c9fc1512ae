"""`cgan bench` runs both loops on a recipe and reports comparable figures (no timing asserted)."""

import json
import platform
import sys

from conftest import cgan


def test_bench_json_reports_both_loops(tiny_recipe):
    report = json.loads(cgan("bench", str(tiny_recipe), "--steps", "2", "--json", check=True).stdout)
    for key in ("ms_per_step", "images_per_s", "bare_ratio", "bare_ms_per_step", "peak_memory_mb"):
        assert isinstance(report[key], (int, float)) and report[key] > 0, key
    assert report["batch_size"] == 2 and report["image_size"] == 32 and report["precision"] == "float32"
    assert abs(report["images_per_s"] * report["ms_per_step"] / 1000 - 2) < 0.05
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert report["kept_heap"] is glibc  # the CPU run kept freed memory in glibc's heap


def test_bench_checks_the_recipe_like_run(tmp_path):
    result = cgan("bench", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
