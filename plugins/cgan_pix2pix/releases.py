"""The public pix2pix dataset releases: where they live, what they hold, and a resumable download."""

from __future__ import annotations

import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cgan_kit.errors import CganError

OFFICIAL_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CHUNK = 1 << 20


@dataclass(frozen=True)
class Release:
    """One published pix2pix dataset: its name, file counts per split, and the paper's direction."""

    name: str
    counts: dict[str, int]
    direction: str
    sha256: str | None = None  # none is published for these archives; counts are the check


RELEASES = {
    release.name: release
    for release in (
        Release("facades", {"train": 400, "val": 100, "test": 106}, "BtoA"),
        Release("cityscapes", {"train": 2975, "val": 500}, "BtoA"),
        Release("maps", {"train": 1096, "val": 1098}, "AtoB"),
        Release("edges2shoes", {"train": 49825, "val": 200}, "AtoB"),
        Release("edges2handbags", {"train": 138567, "val": 200}, "AtoB"),
        Release("night2day", {"train": 17823, "val": 10, "test": 2287}, "AtoB"),
    )
}


def base_url() -> str:
    """Where archives come from: the official server, or a mirror named by CGAN_DATA_URL."""
    return os.environ.get("CGAN_DATA_URL", OFFICIAL_URL).rstrip("/")


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


def download(name: str, into: Path, keep_archive: bool = False) -> Path:
    """Fetch, verify and unpack a release into ``into/name``; an interrupted download resumes."""
    release = RELEASES.get(name)
    if release is None:
        raise CganError(f'unknown pix2pix release "{name}"; known: {", ".join(RELEASES)}')
    target = into / name
    if target.is_dir() and not verify(release, target):
        print(f"{target} is already complete", file=sys.stderr)
        return target
    into.mkdir(parents=True, exist_ok=True)
    archive = into / f"{name}.tar.gz"
    if not archive.is_file():
        _fetch(f"{base_url()}/{name}.tar.gz", archive)
    unpacked = into / f".{name}.unpacking"
    shutil.rmtree(unpacked, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths, links out of the folder and device files.
            tar.extractall(unpacked, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        archive.unlink(missing_ok=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        raise CganError(f"{archive} is damaged ({error}); it was removed: run the command again") from None
    found = unpacked / name if (unpacked / name).is_dir() else unpacked
    problems = verify(release, found)
    if problems:
        shutil.rmtree(unpacked, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise CganError(f"{name}: the downloaded archive does not match the release ({'; '.join(problems)}); "
                        "it was removed: run the command again, or report it if it persists")
    if target.exists():
        shutil.rmtree(target)
    found.rename(target)
    shutil.rmtree(unpacked, ignore_errors=True)
    if not keep_archive:
        archive.unlink()
    return target


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
        with open(part, "ab" if resumed else "wb") as out, _Progress(url, total, have) as progress:
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


class _Progress:
    """A rich progress bar on a terminal, a line every few seconds elsewhere."""

    def __init__(self, url: str, total: int, done: int):
        self.url, self.total, self.done, self.last = url, total, done, 0.0
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

            self.bar = Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
            self.task = self.bar.add_task(url, total=total or None, completed=done)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        else:
            print(f"downloading {self.url}" + (f" (resuming at {self.done} bytes)" if self.done else ""),
                  file=sys.stderr)
        return self

    def advance(self, size: int) -> None:
        self.done += size
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif time.monotonic() - self.last > 5:
            self.last = time.monotonic()
            of = f" of {self.total >> 20} MiB" if self.total else ""
            print(f"  {self.done >> 20} MiB{of}", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
