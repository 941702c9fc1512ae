"""`cgan data download` against a local HTTP server on 127.0.0.1: progress, resume, verification,
for the pix2pix releases (.tar.gz) and the CycleGAN ones (.zip, checked entry by entry)."""

from __future__ import annotations

import http.server
import io
import os
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from cgan_kit.errors import CganError
from cgan_pix2pix.releases import RELEASES, download

COUNTS = {"train": 400, "val": 100, "test": 106}  # the facades release
UNALIGNED = RELEASES["facades_unaligned"].counts  # CycleGAN's facades: trainA 400, trainB 400, testA 106, testB 106


def _pixels() -> bytes:
    pixel = io.BytesIO()
    Image.new("RGB", (2, 1), (10, 20, 30)).save(pixel, format="JPEG")
    return pixel.getvalue()


def cyclegan_archive(counts: dict[str, int], extra: tuple[tuple[zipfile.ZipInfo, bytes], ...] = ()) -> bytes:
    """A stand-in for CycleGAN's facades.zip: facades/trainA/ ... with the given counts of 2x1 pixel
    images, then any extra (hostile) entries."""
    buffer, data = io.BytesIO(), _pixels()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder, count in counts.items():
            zf.writestr(f"facades/{folder}/", b"")
            for i in range(1, count + 1):
                zf.writestr(f"facades/{folder}/{i}_{folder[-1]}.jpg", data)
        for info, payload in extra:
            zf.writestr(info, payload)
    return buffer.getvalue()


def facades_archive(counts: dict[str, int]) -> bytes:
    """A stand-in for facades.tar.gz: the release's layout and file counts, with 2x1 pixel images."""
    buffer = io.BytesIO()
    data = _pixels()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for split, count in counts.items():
            for i in range(1, count + 1):
                info = tarfile.TarInfo(f"facades/{split}/{i}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Server:
    """Serves one archive with HTTP range support; can cut the first transfer short, as a flaky link does."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None, path: str = "/facades.tar.gz"):
        self.payload, self.cut_first_at, self.requests = payload, cut_first_at, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.headers.get("Range"))
                if self.path != path:
                    self.send_error(404)
                    return
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_first_at is not None and len(server.requests) == 1:
                    self.wfile.write(body[:server.cut_first_at])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-transfer
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def cgan(*args: str, cwd: Path, url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CGAN_DATA_URL": url}
    return subprocess.run([sys.executable, "-m", "cgan_kit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one-line error a failed command ends with (progress lines may come before it)."""
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and not any(line.startswith("error") for line in lines[:-1])
    return lines[-1]


@pytest.fixture(scope="module")
def archive() -> bytes:
    return facades_archive(COUNTS)


def test_download_resumes_after_a_broken_transfer_and_verifies(tmp_path, archive):
    server = Server(archive, cut_first_at=len(archive) // 3)
    try:
        first = cgan("data", "download", "facades", cwd=tmp_path, url=server.url)
        assert first.returncode == 2, first.stderr
        assert "run the command again to resume" in first.stderr and "Traceback" not in first.stderr
        part = tmp_path / "data" / "facades.tar.gz.part"
        assert 0 < part.stat().st_size < len(archive)

        second = cgan("data", "download", "facades", cwd=tmp_path, url=server.url)
        assert second.returncode == 0, second.stderr
        assert server.requests[-1] == f"bytes={len(archive) // 3}-"  # it asked only for the rest
        for split, count in COUNTS.items():
            assert len(list((tmp_path / "data" / "facades" / split).glob("*.jpg"))) == count
        assert not part.exists() and not (tmp_path / "data" / "facades.tar.gz").exists()
        assert "data/facades is ready" in second.stdout
    finally:
        server.close()


def test_an_archive_with_wrong_counts_is_rejected(tmp_path):
    server = Server(facades_archive({"train": 399, "val": 100, "test": 106}))
    try:
        result = cgan("data", "download", "facades", cwd=tmp_path, url=server.url)
        assert result.returncode == 2
        assert "train/ has 399 images, expected 400" in result.stderr
        assert not (tmp_path / "data" / "facades").exists()
    finally:
        server.close()


def test_no_network_is_a_clear_error(tmp_path):
    result = cgan("data", "download", "facades", cwd=tmp_path, url="http://127.0.0.1:9")  # nothing listens
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot reach http://127.0.0.1:9/facades.tar.gz")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_release(tmp_path):
    result = cgan("data", "download", "fa", cwd=tmp_path, url="http://127.0.0.1:9")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert 'unknown release "fa"; did you mean facades or facades_unaligned?' in result.stderr
    near = cgan("data", "download", "horse2zebr", cwd=tmp_path, url="http://127.0.0.1:9")
    assert near.returncode == 2 and "did you mean horse2zebra?" in near.stderr


def test_releases_that_are_not_offered_say_why(tmp_path):
    result = cgan("data", "download", "cyclegan/cityscapes", cwd=tmp_path, url="http://127.0.0.1:9")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "not offered" in result.stderr and "license" in result.stderr


def test_releases_lists_both_families_with_their_data_types(tmp_path):
    result = cgan("data", "releases", cwd=tmp_path, url="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    line = {row.split()[0]: row for row in lines if row.startswith("  ")}
    assert "train 400, val 100, test 106 (aligned, paper direction BtoA)" in line["facades"]
    assert "trainA 1067, trainB 1334, testA 120, testB 140 (unaligned)" in line["horse2zebra"]
    facades = "trainA 400, trainB 400, testA 106, testB 106 (unaligned; also cyclegan/facades)"
    assert facades in line["facades_unaligned"]
    assert "maps_unaligned" in line and "monet2photo" in line
    assert any('data.type = "aligned"' in row for row in lines)
    assert any('data.type = "unaligned"' in row for row in lines)


# --- CycleGAN releases: zip archives ----------------------------------------------------------


@pytest.fixture(scope="module")
def zip_archive() -> bytes:
    return cyclegan_archive(UNALIGNED)


def test_a_cyclegan_release_downloads_verifies_and_lands_where_unaligned_reads_it(tmp_path, zip_archive):
    server = Server(zip_archive, path="/facades.zip")
    try:
        result = cgan("data", "download", "cyclegan/facades", cwd=tmp_path, url=server.url)
        assert result.returncode == 0, result.stderr
        target = tmp_path / "data" / "facades_unaligned"
        assert "data/facades_unaligned is ready" in result.stdout and "data.layout=folders" in result.stdout
        for folder, count in UNALIGNED.items():
            assert len(list((target / folder).glob("*.jpg"))) == count
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["facades_unaligned"]  # no zip, no leftovers
        again = cgan("data", "download", "facades_unaligned", cwd=tmp_path, url="http://127.0.0.1:9")
        assert again.returncode == 0 and "already complete" in again.stderr
    finally:
        server.close()
    from cgan_cyclegan.datasets import unaligned

    assert len(unaligned("train", augment=False, root=str(target))) == 400  # the layout it reads, as downloaded
    assert len(unaligned("test", augment=False, root=str(target))) == 106
    with pytest.raises(CganError, match="cgan data download facades_unaligned --dir"):
        unaligned("train", augment=False, root=str(tmp_path / "elsewhere" / "facades_unaligned"))


def test_a_cyclegan_zip_resumes_after_a_broken_transfer(tmp_path, zip_archive):
    server = Server(zip_archive, cut_first_at=len(zip_archive) // 3, path="/facades.zip")
    try:
        first = cgan("data", "download", "facades_unaligned", cwd=tmp_path, url=server.url)
        assert first.returncode == 2 and "run the command again to resume" in first.stderr
        part = tmp_path / "data" / "facades.zip.part"
        assert 0 < part.stat().st_size < len(zip_archive)
        second = cgan("data", "download", "facades_unaligned", cwd=tmp_path, url=server.url)
        assert second.returncode == 0, second.stderr
        assert server.requests[-1] == f"bytes={len(zip_archive) // 3}-"
        assert len(list((tmp_path / "data" / "facades_unaligned" / "trainB").glob("*.jpg"))) == 400
        assert not part.exists() and not (tmp_path / "data" / "facades.zip").exists()
    finally:
        server.close()


def test_a_cyclegan_zip_with_wrong_counts_is_refused_and_removed(tmp_path):
    server = Server(cyclegan_archive({**UNALIGNED, "testB": 105}), path="/facades.zip")
    try:
        result = cgan("data", "download", "facades_unaligned", cwd=tmp_path, url=server.url)
        assert "testB/ has 105 images, expected 106" in error_line(result)
        assert list((tmp_path / "data").iterdir()) == []  # no release, no zip, no half-unpacked folder
    finally:
        server.close()


def _link(name: str, to: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, to.encode()


def _bomb() -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo("facades/trainA/bomb.jpg")
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, bytes(48 << 20)  # 48 MiB of zeros: about 50 KB deflated, over the 16 MiB + 4x bound


HOSTILE = {
    "traversal": (lambda out: (zipfile.ZipInfo("../x.jpg"), b"x"), 'entry "../x.jpg" climbs out of the folder'),
    "deep traversal": (lambda out: (zipfile.ZipInfo("facades/trainA/../../../x.jpg"), b"x"), "climbs out"),
    "absolute": (lambda out: (zipfile.ZipInfo(str(out / "abs.jpg")), b"x"), "has an absolute path"),
    "symlink": (lambda out: _link("facades/trainA/link.jpg", str(out)), "is a symbolic link"),
    "bomb": (lambda out: _bomb(), "a zip bomb"),
}


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_zip_is_refused_before_anything_is_written(tmp_path, monkeypatch, kind):
    make, message = HOSTILE[kind]
    outside = tmp_path / "outside"
    server = Server(cyclegan_archive({"trainA": 2}, extra=(make(outside),)), path="/facades.zip")
    monkeypatch.setenv("CGAN_DATA_URL", server.url)
    try:
        with pytest.raises(CganError) as error:
            download("facades_unaligned", tmp_path / "data" / "inner")
    finally:
        server.close()
    assert message in str(error.value) and "is unsafe" in str(error.value) and "\n" not in str(error.value)
    assert not outside.exists() and not (tmp_path / "x.jpg").exists() and not (tmp_path / "data" / "x.jpg").exists()
    assert list((tmp_path / "data" / "inner").iterdir()) == []  # not even the release's own files


def test_a_hostile_zip_is_a_one_line_error_on_the_command_line(tmp_path):
    server = Server(cyclegan_archive(UNALIGNED, extra=((zipfile.ZipInfo("../x.jpg"), b"x"),)), path="/facades.zip")
    try:
        result = cgan("data", "download", "facades_unaligned", cwd=tmp_path, url=server.url)
    finally:
        server.close()
    assert 'is unsafe: entry "../x.jpg" climbs out of the folder' in error_line(result)
    assert not (tmp_path / "x.jpg").exists() and list((tmp_path / "data").iterdir()) == []


def test_a_damaged_zip_is_removed_with_a_one_line_error(tmp_path, zip_archive):
    damaged = zip_archive[:len(zip_archive) // 2] + bytes(64) + zip_archive[len(zip_archive) // 2 + 64:]
    server = Server(damaged, path="/facades.zip")
    try:
        result = cgan("data", "download", "facades_unaligned", cwd=tmp_path, url=server.url)
    finally:
        server.close()
    line = error_line(result)
    assert "is damaged" in line and "it was removed" in line
    assert list((tmp_path / "data").iterdir()) == []
