"""`cgan data download` against a local HTTP server on 127.0.0.1: progress, resume, verification."""

from __future__ import annotations

import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from PIL import Image

COUNTS = {"train": 400, "val": 100, "test": 106}  # the facades release


def facades_archive(counts: dict[str, int]) -> bytes:
    """A stand-in for facades.tar.gz: the release's layout and file counts, with 2x1 pixel images."""
    buffer = io.BytesIO()
    pixel = io.BytesIO()
    Image.new("RGB", (2, 1), (10, 20, 30)).save(pixel, format="JPEG")
    data = pixel.getvalue()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for split, count in counts.items():
            for i in range(1, count + 1):
                info = tarfile.TarInfo(f"facades/{split}/{i}.jpg")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Server:
    """Serves one archive with HTTP range support; can cut the first transfer short, as a flaky link does."""

    def __init__(self, payload: bytes, cut_first_at: int | None = None):
        self.payload, self.cut_first_at, self.requests = payload, cut_first_at, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.headers.get("Range"))
                if self.path != "/facades.tar.gz":
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
    assert result.returncode == 2 and 'unknown pix2pix release "fa"' in result.stderr
