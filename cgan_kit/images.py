"""Reading and writing images without losing precision: 8 and 16 bits, grey, RGB, with or without alpha.

Images travel as float32 tensors (C, H, W) in [0, 1], C being 1 (grey), 2 (grey + alpha), 3 (RGB)
or 4 (RGBA). Pillow decodes most files exactly, but narrows 16-bit colour to 8 bits; those files
go through the small readers here instead: 16-bit PNG (any compression) and uncompressed 16-bit
TIFF. 16-bit images are written as PNG by a small writer for the same reason. A file that cannot
be read exactly is refused rather than read approximately.

Hostile files are refused before any decode: an image whose header states more than ``MAX_PIXELS``
pixels (width x height; 100 million by default, e.g. 10000 x 10000) is one error naming its size,
so a small file claiming a huge size cannot make a decoder allocate gigabytes. The environment
variable CGAN_MAX_IMAGE_PIXELS sets another limit; Pillow's own guard (``Image.MAX_IMAGE_PIXELS``)
is kept at the same value. Compressed 16-bit PNG data is inflated no further than its header's size.

A photo stored turned, with an EXIF orientation (JPEG, WebP, TIFF, or a PNG whose eXIf chunk comes
before its pixels), is read upright, as ``PIL.ImageOps.exif_transpose`` would, from one decode;
``image_size`` gives the upright size too (orientations 5 to 8 swap width and height).
"""

from __future__ import annotations

import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, TiffImagePlugin

from cgan_kit.errors import CganError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MAX_PIXELS = 100_000_000  # the largest width x height read; CGAN_MAX_IMAGE_PIXELS in the environment wins
PIXELS_VARIABLE = "CGAN_MAX_IMAGE_PIXELS"

_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's "L" conversion
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # samples per pixel -> PNG colour type
# Pillow modes read as they are, or converted (losslessly) to one that is.
_AS_IS = {"L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N"}
_CONVERT = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB",
            "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_ORIENTATION = 0x0112  # the EXIF tag
_SWAPS_SIDES = (5, 6, 7, 8)  # orientations turned by a quarter (or transposed): width and height swap
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (hidden files skipped), in natural order (2 before 10)."""
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def image_size(path: Path) -> tuple[int, int]:
    """(width, height), upright, from an image file's header, without decoding it: unreadable or
    oversized files fail fast."""
    try:
        with _open(path) as image:
            width, height = _stored_size(image)
            return (height, width) if _orientation(image) in _SWAPS_SIDES else (width, height)
    except _DECODE_ERRORS as error:
        raise CganError(_unreadable(path, error)) from None


def read_bit_depth(path: Path) -> int:
    """8 or 16: the depth of an image's samples, read from its header alone."""
    try:
        with _open(path) as image:
            return 16 if image.mode.startswith("I") or ";16" in _rawmode(image) else 8
    except _DECODE_ERRORS as error:
        raise CganError(_unreadable(path, error)) from None


def read_image(path: Path) -> torch.Tensor:
    """An image file as a float32 tensor (C, H, W) in [0, 1]; 16-bit samples are divided by 65535."""
    try:
        with _open(path) as image:
            orientation = _orientation(image)
            if _is_wide_colour(image):
                samples = _wide_samples(image, path)
            else:
                samples = _pillow_samples(image, path)
                if isinstance(image, TiffImagePlugin.TiffImageFile):
                    orientation = 1  # Pillow turns a TIFF upright as it decodes it
    except _DECODE_ERRORS as error:
        raise CganError(_unreadable(path, error)) from None
    if samples.ndim == 2:
        samples = samples[:, :, None]
    samples = _upright(samples, orientation)
    planar = np.ascontiguousarray(samples.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(planar).div_(65535 if samples.dtype.itemsize == 2 else 255)


def write_image(path: Path, image: torch.Tensor, bit_depth: int = 8) -> None:
    """Save a (C, H, W) tensor in [0, 1] (C of 1 to 4); 16-bit images must go to a .png file."""
    samples = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    if bit_depth == 16:
        if Path(path).suffix.lower() != ".png":
            raise ValueError(f"16-bit images are written as PNG, not {Path(path).suffix or 'no suffix'}")
        _write_png16(Path(path), np.rint(samples * 65535).astype(np.uint16))
    elif bit_depth == 8:
        pixels = np.rint(samples * 255).astype(np.uint8)
        Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(path)
    else:
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth}")


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a (C, H, W) image of 1 to 4 channels to 1 (grey), 3 (RGB) or 4 (RGBA) channels.

    Colour becomes grey by BT.601 luma; grey becomes colour by repetition; a missing alpha is
    opaque; alpha is dropped when the result has none.
    """
    if channels not in (1, 3, 4):
        raise ValueError(f"channels must be 1, 3 or 4, not {channels}")
    have = image.shape[0]
    if have == channels:
        return image
    colour, alpha = (image[:-1], image[-1:]) if have in (2, 4) else (image, None)
    if channels == 1:
        return colour if len(colour) == 1 else (colour * _LUMA[:, None, None]).sum(0, keepdim=True)
    rgb = colour.expand(3, -1, -1) if len(colour) == 1 else colour
    if channels == 3:
        return rgb
    return torch.cat([rgb, alpha if alpha is not None else torch.ones_like(rgb[:1])])


def max_pixels() -> int:
    """The pixel limit: CGAN_MAX_IMAGE_PIXELS when set, else ``MAX_PIXELS``."""
    value = os.environ.get(PIXELS_VARIABLE, "").strip()
    if not value:
        return MAX_PIXELS
    if not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise CganError(f"{PIXELS_VARIABLE}={value} is not a whole number of pixels above 0; "
                        f"set it to the largest width x height to read (default {MAX_PIXELS}) or unset it")
    return int(value)


@contextmanager
def _open(path: Path) -> Iterator[Image.Image]:
    """Pillow's lazy image (header read, nothing decoded), refused when larger than the pixel limit."""
    limit = max_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # Pillow's own guard, in step (it refuses at twice its limit when opening)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below instead, in one line
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as error:
            raise CganError(_too_large(path, error, limit)) from None
    with image:
        width, height = image.size
        if width * height > limit:
            raise CganError(_too_large(path, f"{width}x{height} = {width * height:,}", limit))
        yield image


def _too_large(path: Path, size: object, limit: int) -> str:
    if isinstance(size, Image.DecompressionBombError):  # Pillow gives the count alone
        found = re.search(r"\((\d+) pixels\)", str(size))
        size = f"{int(found[1]):,}" if found else "too many"
    return (f'image "{path}" is too large to decode safely ({size} pixels, over the limit of {limit:,}; '
            f"{PIXELS_VARIABLE} sets another); resize it or remove it")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8, 1 upright) stated before the pixels; never decodes."""
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        orientation = image.tag_v2.get(_ORIENTATION, 1)  # a TIFF tag (Pillow drops it once it has applied it)
    elif image.format == "PNG" and "exif" not in image.info:
        return 1  # Pillow would decode the whole image to look for an eXIf chunk after the pixels
    else:
        try:
            orientation = image.getexif().get(_ORIENTATION, 1)
        except _DECODE_ERRORS:
            return 1  # unreadable metadata: the pixels as stored
    return orientation if orientation in range(1, 9) else 1


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the pixels as stored; Pillow 11 and later report a turned TIFF's upright size."""
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        return image.tag_v2[256], image.tag_v2[257]  # ImageWidth, ImageLength
    return image.size


def _upright(samples: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) samples as stored, turned upright per their EXIF orientation (as ImageOps.exif_transpose)."""
    if orientation in (5, 7):  # transposed: across the main diagonal (5) or the other one (7)
        samples = samples.transpose(1, 0, 2) if orientation == 5 else samples[::-1, ::-1].transpose(1, 0, 2)
    elif orientation in (3, 6, 8):
        samples = np.rot90(samples, {3: 2, 6: -1, 8: 1}[orientation])
    elif orientation in (2, 4):  # mirrored left-right (2) or top-bottom (4)
        samples = samples[:, ::-1] if orientation == 2 else samples[::-1]
    return samples


def _rawmode(image: Image.Image) -> str:
    """How the file stores its samples (e.g. "RGB;16B"), from the first decoder tile."""
    if not image.tile:
        return ""
    args = image.tile[0].args
    first = args if isinstance(args, str) else args[0] if args else ""
    return first if isinstance(first, str) else ""


def _is_wide_colour(image: Image.Image) -> bool:
    """16-bit samples that Pillow would narrow to 8 bits (it keeps only 16-bit grey)."""
    return not image.mode.startswith("I") and ";16" in _rawmode(image)


def readable_mode(image: Image.Image) -> Image.Image | None:
    """``image`` in a mode whose samples are read as they are (grey, RGB, with or without alpha,
    16-bit grey), converted losslessly where it is not; None where no such conversion exists."""
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _CONVERT:
        return image.convert(_CONVERT[image.mode])
    return image if image.mode in _AS_IS else None


def _pillow_samples(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode == "I":  # 32-bit integers: fine when they are 16-bit samples (older Pillows read 16-bit PNGs so)
        samples = np.asarray(image)
        if samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise CganError(f'image "{path}" holds 32-bit integer samples beyond the 16-bit range; '
                            "save it as an 8- or 16-bit PNG")
        return samples.astype(np.uint16)
    readable = readable_mode(image)
    if readable is None:
        raise CganError(f'image "{path}" has pixel mode "{image.mode}", which cannot be read as 8- or 16-bit '
                        "grey, RGB or RGBA; save it as an 8- or 16-bit PNG")
    return np.asarray(readable)


def _wide_samples(image: Image.Image, path: Path) -> np.ndarray:
    """16-bit colour samples (H, W, C) as stored, read by the small readers here."""
    if image.format == "PNG":
        return _read_png16(path, image.size)
    if image.tile and all(tile.codec_name == "raw" for tile in image.tile):
        return _read_raw16(image, path)
    raise CganError(f'image "{path}" is a compressed 16-bit colour {image.format}, which cannot be read without '
                    "losing precision; save it as a 16-bit PNG (or an uncompressed TIFF)")


def _read_raw16(image: Image.Image, path: Path) -> np.ndarray:
    """Uncompressed 16-bit samples, strip by strip, straight from the file (TIFF and the like), as stored."""
    width, height = _stored_size(image)
    layout, _, order = _rawmode(image).partition(";16")
    if layout not in ("LA", "RGB", "RGBA") or order not in ("", "B", "L", "N"):
        raise CganError(f'image "{path}" stores 16-bit samples as "{_rawmode(image)}", which cannot be read; '
                        "save it as a 16-bit PNG")
    dtype = np.dtype(np.uint16).newbyteorder(">" if order == "B" else "<" if order == "L" else "=")
    channels = len(layout)
    data = path.read_bytes()
    samples = np.empty((height, width, channels), dtype)
    for tile in image.tile:
        left, top, right, bottom = tile.extents
        _, stride, orientation = tile.args
        if (left, right) != (0, width) or stride not in (0, width * channels * 2) or orientation != 1:
            raise CganError(f'image "{path}" is a tiled or bottom-up 16-bit TIFF, which cannot be read; '
                            "save it as a 16-bit PNG")
        count = (bottom - top) * width * channels
        strip = np.frombuffer(data, dtype, count=count, offset=tile.offset)
        samples[top:bottom] = strip.reshape(bottom - top, width, channels)
    return samples


def _read_png16(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A 16-bit PNG's samples as (H, W, C) big-endian uint16; ``size``, when given, is the (width, height)
    its header must state (as Pillow read it)."""
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    header, compressed = b"", []
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"IHDR" and not header:  # the first: a later one cannot change the size checked
            header = body
        elif kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            break
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = next((n for n, kind in _PNG_COLOUR_TYPES.items() if kind == colour), 0)
    if depth != 16 or not channels:
        raise ValueError(f"unexpected PNG header (bit depth {depth}, colour type {colour})")
    if interlace:
        raise CganError(f'image "{path}" is an interlaced 16-bit PNG, which cannot be read; '
                        "save it without interlacing")
    if size is not None and (width, height) != tuple(size):
        raise ValueError(f"its headers disagree on the size ({width}x{height} and {size[0]}x{size[1]})")
    if width * height > max_pixels():  # checked when opened too; this reader trusts no other header
        raise CganError(_too_large(path, f"{width}x{height} = {width * height:,}", max_pixels()))
    pixel = 2 * channels  # bytes per pixel
    expected = height * (1 + width * pixel)
    inflate = zlib.decompressobj()  # bounded: data longer than the header's size is never inflated further
    inflated = inflate.decompress(b"".join(compressed), expected + 1)
    if len(inflated) > expected:
        raise ValueError(f"image data longer than its header's {width}x{height} pixels")
    if len(inflated) < expected or not inflate.eof:
        raise ValueError(f"image data shorter than its header's {width}x{height} pixels")
    rows = np.frombuffer(inflated, np.uint8).reshape(height, 1 + width * pixel)
    # A PNG filter predicts each byte from the byte one pixel to the left, the one above and the one
    # above-left, so byte k of every pixel forms an 8-bit grey image with the same row filters. Stacked
    # into one grey PNG stream (each preceded by a zero row, standing in for the blank row above the
    # first), Pillow's C decoder undoes the filters of all of them at once.
    lanes = np.zeros((pixel, height + 1, 1 + width), np.uint8)
    lanes[:, 1:, 0] = rows[:, 0]
    lanes[:, 1:, 1:] = rows[:, 1:].reshape(height, width, pixel).transpose(2, 0, 1)
    grey = Image.frombytes("L", (width, pixel * (height + 1)), zlib.compress(lanes.tobytes(), 0), "zip", "L")
    unfiltered = np.asarray(grey).reshape(pixel, height + 1, width)[:, 1:].transpose(1, 2, 0)
    return np.ascontiguousarray(unfiltered).view(">u2")


def _write_png16(path: Path, samples: np.ndarray) -> None:
    """Write (H, W, C) uint16 samples as a 16-bit PNG (no filtering, zlib level 6)."""
    height, width, channels = samples.shape
    rows = np.zeros((height, 1 + width * channels * 2), np.uint8)  # filter byte 0 ("none") per row
    rows[:, 1:] = samples.astype(">u2").reshape(height, -1).view(np.uint8)
    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(rows.tobytes(), 6)), (b"IEND", b"")]
    with open(path, "wb") as file:
        file.write(_PNG_SIGNATURE)
        for kind, body in chunks:
            file.write(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body)))


def _unreadable(path: Path, error: BaseException) -> str:
    if isinstance(error, Image.DecompressionBombError):  # Pillow's guard while decoding (TIFF tiles, GIF frames)
        return _too_large(path, error, Image.MAX_IMAGE_PIXELS or max_pixels())
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f'image "{path}" cannot be opened ({error.strerror or error}); check that it exists and is readable'
    try:
        empty = Path(path).stat().st_size == 0
    except OSError:
        return f'image "{path}" cannot be opened ({error}); check that it exists and is readable'
    if empty:
        return f'image "{path}" is empty (0 bytes); replace or remove it'
    return f'image "{path}" is corrupt or truncated ({" ".join(str(error).split())}); replace or remove it'
