"""Reading and writing images: exact 8- and 16-bit samples, channel conversions, and broken files."""

import re
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from cgan_kit.errors import CganError
from cgan_kit import images
from cgan_kit.images import list_images, read_bit_depth, read_image, to_channels, write_image

PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def filtered_png16(path, samples: np.ndarray) -> None:
    """Write (H, W, C) uint16 samples as a 16-bit PNG, row y filtered with filter type y % 5 (spec order)."""
    height, width, channels = samples.shape
    pixel = 2 * channels
    raw = samples.astype(">u2").reshape(height, -1).view(np.uint8).astype(int)
    rows = []
    for y in range(height):
        kind, line, above = y % 5, raw[y], raw[y - 1] if y else np.zeros_like(raw[0])
        out = []
        for i, value in enumerate(line):
            a = line[i - pixel] if i >= pixel else 0
            c = above[i - pixel] if i >= pixel else 0
            predictor = [0, a, above[i], (a + above[i]) // 2, paeth(a, above[i], c)][kind]
            out.append((value - predictor) % 256)
        rows.append(bytes([kind, *out]))
    header = struct.pack(">IIBBBBB", width, height, 16, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))


def tiff16(path, samples: np.ndarray, deflate: bool = False, claim: tuple[int, int] | None = None,
           orientation: int = 0) -> None:
    """Write (H, W, C) uint16 samples as a little-endian, single-strip RGB(A) TIFF; ``claim`` (width, height)
    puts another size in the header than the samples have, ``orientation`` an orientation tag."""
    height, width, channels = samples.shape
    width, height = claim or (width, height)
    data = samples.astype("<u2").tobytes()
    if deflate:
        data = zlib.compress(data)
    count = 10 + (channels == 4) + bool(orientation)
    bits_at = 8 + 2 + count * 12 + 4
    data_at = bits_at + 2 * channels
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, channels, bits_at), (259, 3, 1, 8 if deflate else 1),
            (262, 3, 1, 2), (273, 4, 1, data_at), (277, 3, 1, channels), (278, 4, 1, height),
            (279, 4, 1, len(data)), (284, 3, 1, 1)]
    if channels == 4:
        tags.append((338, 3, 1, 2))  # extra sample: unassociated alpha
    if orientation:
        tags.append((274, 3, 1, orientation))
    entries = b"".join(struct.pack("<HHII", tag, kind, n, value) if kind == 4 or n > 1
                       else struct.pack("<HHIHH", tag, kind, n, value, 0) for tag, kind, n, value in sorted(tags))
    path.write_bytes(b"II*\x00" + struct.pack("<IH", 8, count) + entries + struct.pack("<I", 0)
                     + struct.pack(f"<{channels}H", *[16] * channels) + data)


def random16(shape, seed=0) -> np.ndarray:
    samples = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    samples.flat[:4] = [0, 1, 65534, 65535]  # the extremes and single steps
    return samples


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_round_trip(tmp_path, channels):
    samples = random16((6, 9, channels))
    image = torch.from_numpy(samples.astype(np.float32) / 65535).permute(2, 0, 1)
    write_image(tmp_path / "x.png", image, bit_depth=16)
    back = read_image(tmp_path / "x.png")
    assert back.dtype == torch.float32 and back.shape == (channels, 6, 9)
    assert torch.equal(torch.round(back * 65535).permute(1, 2, 0).to(torch.int32),
                       torch.from_numpy(samples.astype(np.int32)))
    assert read_bit_depth(tmp_path / "x.png") == 16


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_every_filter(tmp_path, channels):
    samples = random16((10, 7, channels), seed=channels)
    filtered_png16(tmp_path / "f.png", samples)
    got = np.rint(read_image(tmp_path / "f.png").permute(1, 2, 0).numpy() * 65535).astype(np.uint16)
    assert np.array_equal(got, samples)
    if channels == 1:  # Pillow decodes 16-bit grey exactly: an independent check of the filter decoding
        ours = images._read_png16(tmp_path / "f.png")[:, :, 0]
        assert np.array_equal(ours, np.asarray(Image.open(tmp_path / "f.png")))


def test_16bit_grey_tiff_and_png_through_pillow(tmp_path):
    samples = random16((5, 8))
    for name in ("g.tif", "g.png"):
        Image.fromarray(samples).save(tmp_path / name)
        back = read_image(tmp_path / name)
        assert back.shape == (1, 5, 8) and read_bit_depth(tmp_path / name) == 16
        assert np.array_equal(np.rint(back[0].numpy() * 65535).astype(np.uint16), samples)


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_tiff_uncompressed(tmp_path, channels):
    samples = random16((4, 5, channels))
    tiff16(tmp_path / "c.tif", samples)
    back = read_image(tmp_path / "c.tif")
    assert np.array_equal(np.rint(back.permute(1, 2, 0).numpy() * 65535).astype(np.uint16), samples)


def test_16bit_colour_tiff_compressed_is_refused(tmp_path):
    tiff16(tmp_path / "z.tif", random16((4, 5, 3)), deflate=True)
    with pytest.raises(CganError, match=r'z\.tif" is a compressed 16-bit colour TIFF.*16-bit PNG'):
        read_image(tmp_path / "z.tif")


@pytest.mark.parametrize("mode,channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4), ("1", 1), ("P", 3)])
def test_8bit_modes(tmp_path, mode, channels):
    pixels = np.random.default_rng(1).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    source = Image.fromarray(pixels, "RGBA").convert("RGB" if mode == "P" else "RGBA").convert(mode)
    source.save(tmp_path / "x.png")
    back = read_image(tmp_path / "x.png")
    assert back.shape == (channels, 6, 5) and read_bit_depth(tmp_path / "x.png") == 8
    expected = np.asarray(source.convert({1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]))
    assert np.array_equal(np.rint(back.numpy() * 255).astype(np.uint8), expected.reshape(6, 5, -1).transpose(2, 0, 1))


def test_8bit_write_round_trip(tmp_path):
    pixels = torch.randint(0, 256, (3, 4, 6)).float() / 255
    write_image(tmp_path / "x.png", pixels)
    assert torch.equal(read_image(tmp_path / "x.png"), pixels)


def test_to_channels():
    rgb = torch.rand(3, 2, 2)
    grey = to_channels(rgb, 1)
    assert torch.allclose(grey[0], 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
    assert torch.equal(to_channels(grey, 3), grey.expand(3, 2, 2))
    rgba = to_channels(rgb, 4)
    assert torch.equal(rgba[:3], rgb) and torch.equal(rgba[3], torch.ones(2, 2))
    assert torch.equal(to_channels(rgba, 3), rgb)
    grey_alpha = torch.rand(2, 2, 2)
    assert torch.equal(to_channels(grey_alpha, 1), grey_alpha[:1])
    assert torch.equal(to_channels(grey_alpha, 4), torch.cat([grey_alpha[:1].expand(3, 2, 2), grey_alpha[1:]]))
    with pytest.raises(ValueError):
        to_channels(rgb, 2)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CganError, match=r'image ".*empty\.png" is empty \(0 bytes\); replace or remove it'):
        read_image(tmp_path / "empty.png")


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png"])
def test_truncated_file(tmp_path, name):
    noise = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / name)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[:len(data) // 2])
    with pytest.raises(CganError, match=rf'image ".*{name}" is corrupt or truncated .*replace or remove it') as info:
        read_image(tmp_path / name)
    assert "\n" not in str(info.value)


def test_truncated_16bit_png(tmp_path):
    filtered_png16(tmp_path / "cut16.png", random16((8, 8, 3)))
    data = (tmp_path / "cut16.png").read_bytes()
    (tmp_path / "cut16.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(CganError, match=r'cut16\.png" is corrupt or truncated'):
        read_image(tmp_path / "cut16.png")


def test_not_an_image(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"this is not an image at all")
    with pytest.raises(CganError, match=r'junk\.png" is corrupt or truncated'):
        read_image(tmp_path / "junk.png")
    with pytest.raises(CganError, match=r'junk\.png" is corrupt or truncated'):
        read_bit_depth(tmp_path / "junk.png")


def test_unsupported_mode(tmp_path):
    Image.fromarray(np.zeros((3, 3), np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(CganError, match=r'float\.tif" has pixel mode "F".*save it as an 8- or 16-bit PNG'):
        read_image(tmp_path / "float.tif")


def test_list_images(tmp_path):
    for name in ("10.png", "2.jpg", "1.PNG", ".hidden.png", "notes.txt", "b.tif"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["1.PNG", "2.jpg", "10.png", "b.tif"]


# Hostile and rotated inputs: sizes are checked from the header before any decode; EXIF orientation
# is applied, and image_size (header only) agrees with read_image.

def png16_claiming(path, width: int, height: int, idat: bytes = zlib.compress(bytes(1000))) -> None:
    """A valid 16-bit RGB PNG signature and IHDR claiming width x height, with a small IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def refused_without_allocating(path, size: str) -> str:
    """read_image's one-line error for an image over the pixel limit, raised before memory is spent."""
    tracemalloc.start()
    try:
        with pytest.raises(CganError) as info:
            read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert re.fullmatch(rf'image ".*{re.escape(path.name)}" is too large to decode safely \((?:{size}) pixels, '
                        r"over the limit of [\d,]+; CGAN_MAX_IMAGE_PIXELS sets another\); resize it or remove it",
                        message), message
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated before refusing"
    return message


@pytest.mark.parametrize("width,height", [(12000, 12000), (50000, 50000)])
def test_16bit_png_over_the_pixel_limit(tmp_path, monkeypatch, width, height):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    png16_claiming(tmp_path / "huge.png", width, height)
    assert width * height > images.MAX_PIXELS
    refused_without_allocating(tmp_path / "huge.png", rf"{width}x{height} = {width * height:,}|{width * height:,}")


def test_16bit_tiff_over_the_pixel_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    tiff16(tmp_path / "huge.tif", random16((2, 2, 3)), claim=(12000, 12000))
    refused_without_allocating(tmp_path / "huge.tif", "12000x12000 = 144,000,000")


def test_16bit_png_inflating_beyond_its_header(tmp_path):
    # A 4x4 header over 64 MB of image data: inflated only as far as the header's size, then refused.
    png16_claiming(tmp_path / "liar.png", 4, 4, idat=zlib.compress(bytes(64 << 20), 9))
    tracemalloc.start()
    try:
        with pytest.raises(CganError, match=r'liar\.png" is corrupt or truncated \(.*longer than') as info:
            read_image(tmp_path / "liar.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(info.value) and peak < 20e6


@pytest.mark.parametrize("size", [(11, 10), (25, 10)])  # over the limit; over twice the limit (Pillow's own check)
def test_8bit_over_the_pixel_limit(tmp_path, monkeypatch, size):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    monkeypatch.setenv("CGAN_MAX_IMAGE_PIXELS", "100")
    Image.new("RGB", (10, 10)).save(tmp_path / "fits.png")
    Image.new("RGB", size).save(tmp_path / "big.png")
    assert read_image(tmp_path / "fits.png").shape == (3, 10, 10)
    assert Image.MAX_IMAGE_PIXELS == 100  # Pillow's own guard follows ours
    pixels = size[0] * size[1]
    message = refused_without_allocating(tmp_path / "big.png", rf"{size[0]}x{size[1]} = {pixels}|{pixels}")
    assert message.endswith("over the limit of 100; CGAN_MAX_IMAGE_PIXELS sets another); resize it or remove it")
    with pytest.raises(CganError, match=r'big\.png" is too large .*over the limit of 100;'):
        images.image_size(tmp_path / "big.png")
    monkeypatch.delenv("CGAN_MAX_IMAGE_PIXELS")
    monkeypatch.setattr(images, "MAX_PIXELS", 100)  # the module constant, when the environment says nothing
    with pytest.raises(CganError, match=r'big\.png" is too large .*over the limit of 100;'):
        read_image(tmp_path / "big.png")


@pytest.mark.parametrize("value", ["many", "0", "-5"])
def test_bad_pixel_limit_in_the_environment(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CGAN_MAX_IMAGE_PIXELS", value)
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(CganError, match=rf"^CGAN_MAX_IMAGE_PIXELS={value} is not a whole number of pixels above 0"):
        read_image(tmp_path / "x.png")


def rotated_jpeg(path, orientation: int) -> None:
    """An 8 (wide) x 5 noise JPEG whose EXIF says the camera stored it turned (orientation 1 to 8)."""
    noise = np.random.default_rng(orientation).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(noise).save(path, exif=exif, quality=95)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation(tmp_path, orientation):
    rotated_jpeg(tmp_path / "photo.jpg", orientation)
    with Image.open(tmp_path / "photo.jpg") as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored))
    back = read_image(tmp_path / "photo.jpg")
    assert np.array_equal(np.rint(back.permute(1, 2, 0).numpy() * 255).astype(np.uint8), upright)
    assert images.image_size(tmp_path / "photo.jpg") == (upright.shape[1], upright.shape[0])
    assert upright.shape[:2] == ((8, 5) if orientation >= 5 else (5, 8))


def test_16bit_png_exif_orientation(tmp_path):
    samples = random16((5, 8, 3))
    write_image(tmp_path / "r.png", torch.from_numpy(samples.astype(np.float32) / 65535).permute(2, 0, 1), 16)
    exif = Image.Exif()
    exif[0x0112] = 6  # 90 degrees clockwise to be upright
    data = (tmp_path / "r.png").read_bytes()
    at = data.index(b"IDAT") - 4  # the eXIf chunk goes before the image data
    (tmp_path / "r.png").write_bytes(data[:at] + chunk(b"eXIf", exif.tobytes()[6:]) + data[at:])
    back = np.rint(read_image(tmp_path / "r.png").permute(1, 2, 0).numpy() * 65535).astype(np.uint16)
    assert np.array_equal(back, np.rot90(samples, -1))
    assert images.image_size(tmp_path / "r.png") == (5, 8)


def upright_by_pillow(samples: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) samples turned as ImageOps.exif_transpose turns an image (through a map of pixel indices)."""
    height, width = samples.shape[:2]
    indices = Image.fromarray(np.arange(height * width, dtype=np.int32).reshape(height, width))
    indices.getexif()[0x0112] = orientation
    return samples.reshape(height * width, -1)[np.asarray(ImageOps.exif_transpose(indices))]


@pytest.mark.parametrize("orientation", [3, 6, 7])
def test_tiff_orientation(tmp_path, orientation):
    # Pillow turns TIFFs upright itself (and, from Pillow 11, reports the upright size): never turned twice.
    pixels = np.random.default_rng(3).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "t8.tif", tiffinfo={274: orientation})
    with Image.open(tmp_path / "t8.tif") as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored))
    assert upright.shape[:2] == ((8, 5) if orientation >= 5 else (5, 8))
    back = np.rint(read_image(tmp_path / "t8.tif").permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(back, upright)
    assert images.image_size(tmp_path / "t8.tif") == (upright.shape[1], upright.shape[0])
    samples = random16((5, 8, 3))  # 16-bit colour: read by the raw reader here, turned here
    tiff16(tmp_path / "t16.tif", samples, orientation=orientation)
    back16 = np.rint(read_image(tmp_path / "t16.tif").permute(1, 2, 0).numpy() * 65535).astype(np.uint16)
    assert np.array_equal(back16, upright_by_pillow(samples, orientation))
    assert images.image_size(tmp_path / "t16.tif") == (back16.shape[1], back16.shape[0])


def test_translate_reads_photos_upright(tmp_path):
    # Through `cgan translate`'s own code (an identity generator): a turned photo and a plain image of the
    # same stored size are batched by their upright sizes, and come out upright.
    from cgan_kit.inference.translate import Loaded, translate

    rotated_jpeg(tmp_path / "turned.jpg", 6)
    Image.new("RGB", (8, 5), (200, 30, 90)).save(tmp_path / "plain.png")
    loaded = Loaded(path=tmp_path / "none.pt", recipe=None, meta={}, generator=torch.nn.Identity(), ema=False,
                    device=torch.device("cpu"), direction="AtoB", source="input", target="target", in_channels=3,
                    out_channels=3, measures="paired")
    written = translate(loaded, [tmp_path / "turned.jpg", tmp_path / "plain.png"], tmp_path / "out")
    assert sorted(p.name for p in written) == ["plain.png", "turned.png"]
    with Image.open(tmp_path / "turned.jpg") as stored:
        upright = np.asarray(ImageOps.exif_transpose(stored)).astype(int)
    out = np.asarray(Image.open(tmp_path / "out" / "turned.png")).astype(int)
    assert out.shape == (8, 5, 3) and np.abs(out - upright).max() <= 1
    assert Image.open(tmp_path / "out" / "plain.png").size == (8, 5)


def test_16bit_png_with_a_second_header(tmp_path):
    # A second IHDR after the pixels cannot make the 16-bit reader believe another size than the one checked.
    filtered_png16(tmp_path / "two.png", random16((4, 4, 3)))
    data = (tmp_path / "two.png").read_bytes()
    huge = chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 12000, 16, 2, 0, 0, 0))
    (tmp_path / "two.png").write_bytes(data[:-12] + huge + data[-12:])
    assert read_image(tmp_path / "two.png").shape == (3, 4, 4)
    (tmp_path / "two.png").write_bytes(data[:33] + huge + data[33:])  # before the pixels: Pillow reads the later one
    with pytest.raises(CganError, match=r'two\.png" is too large to decode safely \(12000x12000'):
        read_image(tmp_path / "two.png")
