"""The pages' front-end libraries: fetched by pinned version, refused unless the tarball's
SHA-512 is the pinned one, fetched once, and the pins themselves well formed."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from services.metrics.pages import vendor


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _manifest(tmp_path: Path, data: bytes) -> Path:
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    path = tmp_path / "vendor.json"
    path.write_text(
        json.dumps(
            {"packages": [{"name": "lib", "version": "1.2.3", "integrity": integrity,
                           "files": {"package/dist/lib.min.js": "lib.min.js"}}]}
        )
    )  # fmt: skip
    return path


def test_a_pinned_tarball_is_fetched_once_and_only_its_file_kept(tmp_path: Path) -> None:
    data = _tarball({"package/dist/lib.min.js": b"lib()", "package/other.js": b"no"})
    asked: list[str] = []

    def download(url: str) -> bytes:
        asked.append(url)
        return data

    manifest = _manifest(tmp_path, data)
    target = tmp_path / "assets"
    first = vendor.fetch(target, manifest=manifest, registry="https://r.test", download=download)
    again = vendor.fetch(target, manifest=manifest, registry="https://r.test", download=download)

    assert first == ["lib"]
    assert again == []
    assert asked == ["https://r.test/lib/-/lib-1.2.3.tgz"]
    assert (target / "lib.min.js").read_bytes() == b"lib()"
    assert not (target / "other.js").exists()


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, _tarball({"package/dist/lib.min.js": b"lib()"}))
    tampered = _tarball({"package/dist/lib.min.js": b"evil()"})

    with pytest.raises(vendor.AssetError, match="integrity mismatch"):
        vendor.fetch(tmp_path / "assets", manifest=manifest, download=lambda _url: tampered)
    assert not (tmp_path / "assets" / "lib.min.js").exists()


def test_every_pin_names_an_exact_version_and_a_sha512() -> None:
    for package in vendor.packages():
        assert package.version.count(".") == 2
        assert package.version.replace(".", "").isdigit()
        assert package.integrity.startswith("sha512-")
        assert len(base64.b64decode(package.integrity.removeprefix("sha512-"))) == 64
    names = {name for p in vendor.packages() for name in p.files.values()}
    assert set(vendor.PAGE_FILES) <= names
    assert "axe.min.js" in names
