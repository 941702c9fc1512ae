"""The public pix2pix and CycleGAN dataset releases: where they live, what they hold, and a
resumable, verified download.

Each release has one name, which is also the folder it fills under ``--dir`` (data/NAME): the
pix2pix releases are aligned (side-by-side pairs in train/, val/, test/; ``data.type =
"aligned"``), the CycleGAN ones unaligned (trainA/, trainB/, testA/, testB/; ``data.type =
"unaligned"``). Both families publish a "facades" and a "maps": the bare names stay the pix2pix
releases, the CycleGAN ones are ``facades_unaligned`` and ``maps_unaligned``. Every release also
answers to ``FAMILY/UPSTREAM_NAME`` (``pix2pix/facades``, ``cyclegan/facades``,
``cyclegan/horse2zebra``), the name the reference code's download scripts take.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import stat
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from cgan_kit.errors import CganError
from cgan_kit.progress import Progress

OFFICIAL_URLS = {"pix2pix": "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets",
                 "cyclegan": "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets"}
OFFICIAL_URL = OFFICIAL_URLS["pix2pix"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CHUNK = 1 << 20
# A zip may unpack to at most this many times its own size, plus ZIP_SLACK: JPEG and PNG files
# barely compress, so an honest release unpacks to about its size; a zip bomb is refused unread.
ZIP_RATIO = 4
ZIP_SLACK = 16 << 20


@dataclass(frozen=True)
class Release:
    """One published dataset: its name (and folder), file counts per folder, and the paper's
    direction (pix2pix) or its family's layout (CycleGAN)."""

    name: str
    counts: dict[str, int]
    direction: str | None = None  # pix2pix: the paper's direction; CycleGAN translates both ways
    family: str = "pix2pix"  # "pix2pix": aligned, a .tar.gz; "cyclegan": unaligned, a .zip
    upstream: str | None = None  # the archive's name on the server (and its top folder), where it differs
    sha256: str | None = None  # not checked: the counts are the check (see the CycleGAN table for published ones)

    @property
    def remote(self) -> str:
        return self.upstream or self.name

    @property
    def file(self) -> str:
        """The archive's file name, on the server and while it downloads."""
        return f"{self.remote}.zip" if self.family == "cyclegan" else f"{self.remote}.tar.gz"

    @property
    def dataset(self) -> str:
        """The data.type that reads the release."""
        return "unaligned" if self.family == "cyclegan" else "aligned"

    @property
    def alias(self) -> str:
        return f"{self.family}/{self.remote}"


RELEASES = {
    release.name: release
    for release in (
        Release("facades", {"train": 400, "val": 100, "test": 106}, "BtoA"),
        Release("cityscapes", {"train": 2975, "val": 500}, "BtoA"),
        Release("maps", {"train": 1096, "val": 1098}, "AtoB"),
        Release("edges2shoes", {"train": 49825, "val": 200}, "AtoB"),
        Release("edges2handbags", {"train": 138567, "val": 200}, "AtoB"),
        Release("night2day", {"train": 17823, "val": 10, "test": 2287}, "AtoB"),
        # The CycleGAN releases of the reference code (junyanz/pytorch-CycleGAN-and-pix2pix,
        # datasets/download_cyclegan_dataset.sh): NAME.zip holding NAME/trainA, trainB, testA, testB.
        # Counts per folder: TensorFlow Datasets' catalog, which lists every file of each folder of
        # these zips (tensorflow/datasets docs/catalog/cycle_gan.md, https://www.tensorflow.org/
        # datasets/catalog/cycle_gan; its builder, tensorflow_datasets/image_classification/cycle_gan.py,
        # makes one example per file). It also publishes each zip's size and SHA-256
        # (tensorflow_datasets/url_checksums/cycle_gan.txt, taken from the older people.eecs mirror):
        # recorded in sha256, not checked, as a re-packed archive on the server would then fail.
        *(Release(name, dict(zip(("trainA", "trainB", "testA", "testB"), counts)), family="cyclegan",
                  upstream=upstream, sha256=sha256)
          for name, upstream, counts, sha256 in (
              # Also the Hugging Face copy gigant/horse2zebra: 1,067 train and 120 test horses, 2,661 files.
              ("horse2zebra", None, (1067, 1334, 120, 140),
               "a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1"),
              ("apple2orange", None, (995, 1019, 266, 248),
               "845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8"),
              ("summer2winter_yosemite", None, (1231, 962, 309, 238),
               "167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9"),
              ("monet2photo", None, (1072, 6287, 121, 751),
               "88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04"),
              ("cezanne2photo", None, (525, 6287, 58, 751),
               "3a6c10ca21f9485862f1cbd707744b9dc258954a04631271d23a3605eeb63cff"),
              ("ukiyoe2photo", None, (562, 6287, 263, 751),
               "02a2a2fb5ecf425ca1bf86aca7304377da64a2a1d3b86df54eb65e4068bf3b08"),
              ("vangogh2photo", None, (400, 6287, 400, 751),
               "362c3473e70be0944bda08d49d660eafdc2854df55d697835b8186d1d79caaff"),
              ("iphone2dslr_flower", None, (1812, 3325, 569, 480),
               "8fcb5e374d631b107e1d961b8c4cd0a186aa2a4ff3e279923f4c426128de7113"),
              # The pix2pix facades' 400 train and 106 test images; maps: its 1,096 train and 1,098 val.
              ("facades_unaligned", "facades", (400, 400, 106, 106),
               "9a31ebf3a31b9b5cd195dd5bf62e9308e00cb94604d1019e3889ac84248695c0"),
              ("maps_unaligned", "maps", (1096, 1096, 1098, 1098),
               "639534f69dbf9f36bef8d6292a7698006361221f83f0285d7c9ca78afe6e8a9e"),
          )),
    )
}
ALIASES = {release.alias: release.name for release in RELEASES.values()}

# Names the reference's CycleGAN script takes that `cgan data download` does not, and why.
NOT_OFFERED = {
    "cyclegan/cityscapes": "the CycleGAN cityscapes release is not distributed (the Cityscapes license): get it from "
                           "https://www.cityscapes-dataset.com, or read the pix2pix release `cityscapes` as two "
                           'domains with layout = "side_by_side"',
    "cyclegan/ae_photos": "ae_photos has no trainA/ or trainB/ to train on (tensorflow_datasets leaves it out for "
                          "that) and no published file counts",
    "cyclegan/grumpifycat": "grumpifycat's counts are not published for all four folders, so it cannot be "
                            f"verified; fetch it by hand from {OFFICIAL_URLS['cyclegan']}/grumpifycat.zip",
    **{f"cyclegan/{name}": f"{name} is the reference code's smoke-test data (its scripts/test_before_push.py), with "
                           "no published file counts"
       for name in ("mini", "mini_pix2pix", "mini_colorization")},
}
NOT_OFFERED.update({key.split("/", 1)[1]: why for key, why in NOT_OFFERED.items()
                    if key.split("/", 1)[1] not in RELEASES})


def base_url(family: str = "pix2pix") -> str:
    """Where a family's archives come from: the official server, or a mirror named by
    CGAN_DATA_URL that holds every archive under its upstream file name (facades.tar.gz,
    horse2zebra.zip, facades.zip)."""
    return os.environ.get("CGAN_DATA_URL", OFFICIAL_URLS[family]).rstrip("/")


def lookup(name: str) -> Release:
    """The release ``name`` (or its FAMILY/NAME alias) stands for; an unknown one is an error that
    suggests the nearest names."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in RELEASES:
        return RELEASES[key]
    if key in NOT_OFFERED:
        raise CganError(f'release "{name}" is not offered: {NOT_OFFERED[key]}')
    near = [c for c in RELEASES if c.startswith(key)] if key else []
    for close in difflib.get_close_matches(key, [*RELEASES, *ALIASES], n=3, cutoff=0.6):
        if ALIASES.get(close, close) not in near:
            near.append(ALIASES.get(close, close))
    if near:
        raise CganError(f'unknown release "{name}"; did you mean {" or ".join(near[:3])}? (`cgan data releases` '
                        "lists them all)")
    raise CganError(f'unknown release "{name}"; known: {", ".join(RELEASES)} (`cgan data releases` lists them)')


def release_for(root: str | Path) -> Release | None:
    """The release a missing data folder is named after (data/facades -> facades), if any."""
    return RELEASES.get(Path(root).name)


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else 0


def verify(release: Release, folder: Path) -> list[str]:
    """Differences between a folder and the release's expected file counts (empty: it matches)."""
    problems = []
    for split, expected in release.counts.items():
        found = count_images(folder / split)
        if found != expected:
            problems.append(f"{split}/ has {found} images, expected {expected}")
    return problems


class UnsafeArchive(Exception):
    """An archive entry that would land outside its folder, a link, or a zip bomb."""


def download(name: str, into: Path, keep_archive: bool = False) -> Path:
    """Fetch, verify and unpack a release into ``into/NAME``; an interrupted download resumes."""
    release = lookup(name)
    target = into / release.name
    if target.is_dir() and not verify(release, target):
        print(f"{target} is already complete", file=sys.stderr)
        return target
    into.mkdir(parents=True, exist_ok=True)
    archive = into / release.file
    if not archive.is_file():
        _fetch(f"{base_url(release.family)}/{release.file}", archive)
    unpacked = into / f".{release.name}.unpacking"
    shutil.rmtree(unpacked, ignore_errors=True)
    try:
        if release.family == "cyclegan":
            _unzip(archive, unpacked, max_files=3 * sum(release.counts.values()) + 1000)
        else:
            with tarfile.open(archive) as tar:
                # The "data" filter refuses absolute paths, links out of the folder and device files.
                tar.extractall(unpacked, filter="data")
    except UnsafeArchive as error:
        archive.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        raise CganError(f"{archive} is unsafe: {error}; it was removed, and nothing was written outside {unpacked} "
                        "(removed too): report it if it persists") from None
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as error:
        archive.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        raise CganError(f"{archive} is damaged ({error}); it was removed: run the command again") from None
    found = unpacked / release.remote if (unpacked / release.remote).is_dir() else unpacked
    problems = verify(release, found)
    if problems:
        shutil.rmtree(unpacked, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise CganError(f"{release.name}: the downloaded archive does not match the release ({'; '.join(problems)}); "
                        "it was removed: run the command again, or report it if it persists")
    if target.exists():
        shutil.rmtree(target)
    found.rename(target)
    shutil.rmtree(unpacked, ignore_errors=True)
    if not keep_archive:
        archive.unlink()
    return target


def _entry_parts(info: zipfile.ZipInfo) -> list[str]:
    """The path components of a zip entry, refusing absolute paths, "..", links and special files."""
    name = info.filename
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise UnsafeArchive(f'entry "{name}" is a symbolic link')
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchive(f'entry "{name}" is not a plain file or folder')
    if info.flag_bits & 0x1:
        raise UnsafeArchive(f'entry "{name}" is encrypted')
    path = name.replace("\\", "/")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        raise UnsafeArchive(f'entry "{name}" has an absolute path')
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f'entry "{name}" climbs out of the folder with ".."')
    return parts


def _unzip(archive: Path, dest: Path, max_files: int) -> None:
    """Unpack a zip into ``dest``, which must not exist, with tarfile's "data" filter's safety:
    every entry is checked before anything is written (no absolute path, no "..", no link, no
    special file), nothing is created outside ``dest``, and the total size is bounded (ZIP_RATIO
    times the archive's size plus ZIP_SLACK, counted as written, so a lying header cannot pass)."""
    limit = ZIP_RATIO * archive.stat().st_size + ZIP_SLACK
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = [(info, _entry_parts(info)) for info in zf.infolist()]
            if len(entries) > max_files:
                raise UnsafeArchive(f"it holds {len(entries)} entries, more than the release's {max_files}")
            total = sum(info.file_size for info, _ in entries)
            if total > limit:
                raise UnsafeArchive(f"it would unpack to {total:,} bytes, more than the bound of {limit:,} "
                                    f"({ZIP_RATIO} times its size plus {ZIP_SLACK >> 20} MiB): a zip bomb")
            dest.mkdir()
            written = 0
            for info, parts in entries:
                if not parts:
                    continue
                path = dest.joinpath(*parts)
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(path, "xb") as out:  # "x": a repeated entry is an error
                    while chunk := source.read(CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise UnsafeArchive(f"it unpacks to more than the bound of {limit:,} bytes: a zip bomb")
                        out.write(chunk)
    except (RuntimeError, NotImplementedError, EOFError, zlib.error) as error:  # encrypted, unknown method, cut
        raise zipfile.BadZipFile(str(error)) from None


def _fetch(url: str, archive: Path) -> None:
    """Download ``url`` to ``archive`` through a ``.part`` file, continuing one left by an earlier try."""
    part = archive.with_name(archive.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the part file is already whole
            part.rename(archive)
            return
        raise CganError(f"cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CganError(f"cannot reach {url} ({reason}); check the network, or put the archive at {archive} "
                        "yourself and run the command again") from None
    with response:
        resumed = response.status == 206
        if have and not resumed:
            have = 0  # the server ignored the range: start over
        total = int(response.headers.get("Content-Length") or 0) + have
        with open(part, "ab" if resumed else "wb") as out, Progress(
                f"downloading {url}" + (f" (resuming at {have} bytes)" if have else ""), total, "bytes", have
        ) as progress:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    progress.advance(len(chunk))
            except (OSError, urllib.error.URLError) as error:
                raise CganError(f"download of {url} broke off ({error}); run the command again to resume "
                                f"from {part.stat().st_size if part.exists() else 0} bytes") from None
    if total and part.stat().st_size != total:
        raise CganError(f"download of {url} ended early ({part.stat().st_size} of {total} bytes); run the "
                        "command again to resume")
    part.rename(archive)
