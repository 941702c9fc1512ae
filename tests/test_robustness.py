"""Nothing a user can get wrong breaks cgan-kit: each mistake is one line on stderr, exit status 2.

Everything goes through the real `cgan` command in a subprocess, on real files: recipes with bad
values, broken data folders and images (also when a DataLoader worker reads them), unwritable
output folders, and recipes that try to run code or to write outside their run folder. The image
reader is fuzzed with corrupted bytes of real PNG and JPEG files.
"""

from __future__ import annotations

import faulthandler
import io
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cgan_kit.errors import CganError
from cgan_pix2pix.datasets import aligned
from cgan_kit.images import read_bit_depth, read_image
from conftest import TINY_RECIPE
from conftest import cgan_one_thread as cgan
from conftest import one_error

SIDE = 32  # every image here is 32 px high: pairs are 32 x 64 side by side


def noise(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def aligned_folder(root: Path, count: int = 4, splits: tuple[str, ...] = ("train", "test")) -> Path:
    """A real aligned data set: ``count`` A|B PNGs of 32 x 64 pixels per split."""
    for split in splits:
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise(SIDE, 2 * SIDE, seed=i).save(root / split / f"{i}.png")
    return root


def recipe_with_data(tmp_path: Path, data: str) -> Path:
    """The tiny recipe with its [data] table replaced."""
    text = re.sub(r"\[data\].*?(?=\[generator\])", data.strip() + "\n\n", TINY_RECIPE, count=1, flags=re.S)
    path = tmp_path / "tiny.toml"
    path.write_text(text + f'out_dir = "{(tmp_path / "runs").as_posix()}"\n')
    return path


def folder_recipe(tmp_path: Path, root: Path, kind: str = "aligned", load_size: int = SIDE,
                  crop_size: int = SIDE) -> Path:
    return recipe_with_data(tmp_path, f'[data]\ntype = "{kind}"\nroot = "{root.as_posix()}"\n'
                                      f"load_size = {load_size}\ncrop_size = {crop_size}\n")


# --- 1. recipe values -----------------------------------------------------------------------------------

def test_bad_values_and_an_unknown_table_are_one_line_each_naming_file_and_key(tmp_path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(TINY_RECIPE + "\n[trian]\nsteps = 3\n")
    result = cgan("check", str(recipe), "--set", "optim.lr=-0.001", "--set", "train.batch_size=0")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3, result.stderr
    assert all(line.startswith(f"error: {recipe}: ") for line in errors), result.stderr
    text = "\n".join(errors)
    assert "optim.lr: must be > 0" in text
    assert "train.batch_size: must be >= 1, found integer 0" in text
    assert 'trian: unknown table; did you mean "train"' in text


def test_crop_larger_than_load_size_stops_the_run_before_training(tmp_path):
    root = aligned_folder(tmp_path / "data", count=2)
    recipe = folder_recipe(tmp_path, root, load_size=SIDE, crop_size=SIDE + 16)
    one_error(cgan("run", str(recipe)), "data.crop_size: 48 is larger than data.load_size = 32",
              "lower crop_size or raise load_size")
    assert not list((tmp_path / "runs").glob("*/checkpoints/*.safetensors"))


def test_check_refuses_a_crop_larger_than_load_size(tmp_path):
    root = aligned_folder(tmp_path / "data", count=2)
    recipe = folder_recipe(tmp_path, root, load_size=SIDE, crop_size=SIDE + 16)
    one_error(cgan("check", str(recipe)), "data.crop_size: 48 is larger than data.load_size = 32")


# --- 2. data folders and images -------------------------------------------------------------------------

def missing_folder(root: Path) -> tuple[Path, str, tuple[str, ...]]:
    return root / "nowhere", "aligned", ('data.root: folder "', "nowhere\" does not exist", "check the path")


def empty_split(root: Path):
    aligned_folder(root, splits=("test",))
    (root / "train").mkdir()
    return root, "aligned", (f'folder "{root / "train"}" holds no images', "put the split's images there")


def unpaired_names(root: Path):
    for side, names in (("A", ("0", "1", "2")), ("B", ("0", "1", "3"))):
        (root / "train" / side).mkdir(parents=True)
        for name in names:
            noise(SIDE, SIDE, seed=int(name)).save(root / "train" / side / f"{name}.png")
    return root, "paired_folders", ("data.root: A and B images pair by file name", "2.png", "3.png",
                                    "rename or remove them")


def _bad_image(root: Path, name: str, content: bytes | None = None, image: Image.Image | None = None,
               split: str = "test") -> Path:
    """A good data set whose image ``name`` (not the first) in ``split`` is replaced. In the test split it is
    read (by a DataLoader) for the sample images before training starts; in the train split, by the
    training loop's DataLoader."""
    aligned_folder(root)
    (root / split / "2.png").unlink()
    path = root / split / name
    if image is not None:
        image.save(path)
    else:
        path.write_bytes(content)
    return path


def corrupt_image(root: Path):
    # The first training image: its header is read when the dataset is built, before any model is.
    aligned_folder(root)
    path = root / "train" / "0.png"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    return root, "aligned", (f'image "{path}" is corrupt or truncated', "replace or remove it")


def truncated_image(root: Path):
    buffer = io.BytesIO()
    noise(SIDE, 2 * SIDE, seed=9).save(buffer, format="PNG")
    path = _bad_image(root, "2.png", buffer.getvalue()[:len(buffer.getvalue()) // 2], split="train")
    return root, "aligned", (f'image "{path}" is corrupt or truncated', "replace or remove it")


def empty_image(root: Path):
    path = _bad_image(root, "2.png", b"")
    return root, "aligned", (f'image "{path}" is empty (0 bytes); replace or remove it',)


def float_image(root: Path):
    # 32-bit float samples (Pillow mode "F"): no exact 8- or 16-bit reading, so refused. (Palette "P" and
    # CMYK files are read; test_images covers the modes that are.)
    path = _bad_image(root, "2.tif", image=Image.fromarray(np.zeros((SIDE, 2 * SIDE), np.float32)))
    return root, "aligned", (f'image "{path}" has pixel mode "F"', "save it as an 8- or 16-bit PNG")


def one_pixel_wide_image(root: Path):
    # Smaller than the crop is fine (every image is resized to load_size first); too narrow to split is not.
    path = _bad_image(root, "2.png", image=noise(SIDE, 1, seed=3))
    return root, "aligned", (f'image "{path}" is 1 pixel wide', "replace or remove it")


DATA_CASES = [missing_folder, empty_split, unpaired_names, corrupt_image, truncated_image, empty_image,
              float_image, one_pixel_wide_image]


@pytest.mark.parametrize("make", DATA_CASES, ids=[f.__name__ for f in DATA_CASES])
def test_bad_data_is_one_line_naming_the_folder_or_image(tmp_path, make):
    root, kind, fragments = make(tmp_path / "data")
    recipe = folder_recipe(tmp_path, root, kind)
    one_error(cgan("run", str(recipe)), *fragments)


def test_a_bad_image_read_by_a_dataloader_worker_is_still_one_line(tmp_path):
    root, kind, fragments = truncated_image(tmp_path / "data")
    recipe = folder_recipe(tmp_path, root, kind)
    one_error(cgan("run", str(recipe), "--set", "train.workers=1"), *fragments)


def test_images_smaller_than_the_crop_are_resized_not_refused(tmp_path):
    (tmp_path / "train").mkdir()
    noise(2, 4, seed=1).save(tmp_path / "train" / "tiny.png")  # A and B of 2 x 2 pixels
    item = aligned("train", True, str(tmp_path), load_size=SIDE, crop_size=SIDE - 8)[0]
    assert item["input"].shape == item["target"].shape == (3, SIDE - 8, SIDE - 8)


def test_cmyk_is_read_as_rgb_and_integers_beyond_16_bits_are_refused(tmp_path):
    cmyk = noise(SIDE, SIDE, seed=2).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg")
    expected = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB"))
    assert np.array_equal(np.rint(read_image(tmp_path / "cmyk.jpg").permute(1, 2, 0).numpy() * 255), expected)
    Image.fromarray(np.full((4, 4), 70_000, np.int32)).save(tmp_path / "wide.tif")  # Pillow mode "I"
    with pytest.raises(CganError, match=r'wide\.tif" holds 32-bit integer samples beyond the 16-bit range'):
        read_image(tmp_path / "wide.tif")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # A 2 KB file that claims 50000 x 50000 RGB pixels (7.5 GB decoded).
    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(2000)))
                     + chunk(b"IEND", b""))
    for read in (read_bit_depth, read_image):
        with pytest.raises(CganError, match=r'bomb\.png" is too large to decode safely .*resize it or remove it'):
            read(bomb)


# --- 3. output folder -----------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["parent_is_a_file", "read_only_parent"])
def test_an_unwritable_output_folder_is_one_line(tiny_recipe, tmp_path, how):
    if how == "parent_is_a_file":
        (tmp_path / "afile").write_text("a file, not a folder")
        out_dir = tmp_path / "afile" / "runs"
    else:
        if os.geteuid() == 0:
            pytest.skip("running as root: permissions do not stop writes (parent_is_a_file covers this)")
        (tmp_path / "locked").mkdir(mode=0o500)
        out_dir = tmp_path / "locked" / "runs"
    one_error(cgan("run", str(tiny_recipe), "--set", f"train.out_dir={out_dir}"),
              f"cannot write the run folder {out_dir / 'tiny'}", "choose a writable train.out_dir")


# --- 8. security ----------------------------------------------------------------------------------------

def test_a_recipe_cannot_import_or_run_code(tmp_path):
    marker = tmp_path / "MARKER"
    code = f"__import__('os').system('touch {marker}')"
    recipe = tmp_path / "evil.toml"
    recipe.write_text(TINY_RECIPE.replace('type = "unet"', 'type = "os.system"')
                      .replace('type = "patchgan"', f'type = "{code}"')
                      .replace('type = "bce"', 'type = "builtins.eval"')
                      .replace('type = "synthetic"', 'type = "subprocess.Popen"'))
    result = cgan("check", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4, result.stderr
    for key, kind, name in (("generator", "generator", "os.system"), ("critic", "critic", code),
                            ("losses[0]", "loss", "builtins.eval"), ("data", "dataset", "subprocess.Popen")):
        assert any(f'{key}.type: unknown {kind} "{name}"' in line for line in errors), (key, result.stderr)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../escape", "ABSOLUTE"])
def test_a_run_name_cannot_leave_the_output_folder(tiny_recipe, tmp_path, name):
    if name == "ABSOLUTE":
        name = str(tmp_path / "elsewhere")
    # Until the name is refused, an impossible batch size ends the run right after it made its folder.
    result = cgan("run", str(tiny_recipe), "--set", f"train.name={name}", "--set", "train.batch_size=1000")
    escaped = [p for p in tmp_path.iterdir() if p.name not in ("runs", tiny_recipe.name)]
    assert escaped == [], f"{name} wrote outside {tmp_path / 'runs'}: {escaped}"
    one_error(result, "train.name")


# --- 7. fuzzing the image reader ------------------------------------------------------------------------

def _encoded(format: str) -> bytes:
    buffer = io.BytesIO()
    noise(24, 24, seed=5).save(buffer, format=format, **({"quality": 80} if format == "JPEG" else {}))
    return buffer.getvalue()


SEEDS = {"png": _encoded("PNG"), "jpg": _encoded("JPEG")}
mutations = st.lists(st.tuples(st.sampled_from(["flip", "set", "trim", "insert"]), st.integers(0, 2**31),
                               st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def mutate(data: bytes, operations: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(data)
    for operation, number, extra in operations:
        at = number % (len(data) + 1)
        if operation == "trim":
            del data[at:]
        elif operation == "insert":
            data[at:at] = extra
        elif data:
            at %= len(data)
            data[at] = data[at] ^ (1 << number % 8) if operation == "flip" else extra[0]
    return bytes(data)


@pytest.mark.parametrize("suffix", sorted(SEEDS))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=mutations)
def test_fuzzed_images_only_raise_cgan_errors(tmp_path, suffix, operations):
    path = tmp_path / f"fuzzed.{suffix}"
    path.write_bytes(mutate(SEEDS[suffix], operations))
    faulthandler.dump_traceback_later(60, exit=True)  # a hang ends the session with a traceback, not never
    try:
        for read in (read_bit_depth, read_image):
            try:
                result = read(path)
            except CganError as error:
                assert str(path) in str(error) and "\n" not in str(error)
                continue
            if read is read_image:
                assert result.dtype == torch.float32 and result.ndim == 3 and 1 <= result.shape[0] <= 4
                assert 0 <= result.min() and result.max() <= 1
    finally:
        faulthandler.cancel_dump_traceback_later()
