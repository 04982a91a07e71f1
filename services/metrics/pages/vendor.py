"""The pages' front-end libraries, pinned in vendor.json and fetched from the npm registry.

Like the Kafka jars from Maven Central: a tarball is downloaded by its exact version, its
SHA-512 is checked against the manifest's ``integrity`` (npm's Subresource-Integrity form,
the registry's ``dist.integrity``) before anything is read from it, and only the listed
minified files are written, to the assets folder (``.run/assets`` by default, git-ignored).
Nothing is fetched while the service runs: a page whose libraries are missing says so and
how to fetch them (``make install``), and still shows every figure as a table.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent / "vendor.json"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
# What the pages load (axe-core is for the tests only).
PAGE_FILES = ("htmx.min.js", "vega.min.js", "vega-lite.min.js", "vega-embed.min.js")


class AssetError(RuntimeError):
    """A tarball could not be had, or it is not the one the manifest pins."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str
    files: dict[str, str]  # path inside the tarball -> file name in the assets folder

    @property
    def tarball_name(self) -> str:
        return f"{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.tarball_name}"


def packages(manifest: Path = MANIFEST) -> list[Package]:
    raw = json.loads(manifest.read_text())
    return [
        Package(p["name"], p["version"], p["integrity"], dict(p["files"])) for p in raw["packages"]
    ]


def check_integrity(data: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise AssetError(f"only sha512 integrity is accepted, got {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise AssetError(f"integrity mismatch: expected sha512-{expected}, got sha512-{actual}")


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as answer:
        data: bytes = answer.read()
        return data


def _stamp(target: Path) -> dict[str, str]:
    try:
        found = json.loads((target / "versions.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def fetch(
    target: Path,
    *,
    manifest: Path = MANIFEST,
    registry: str | None = None,
    download: Callable[[str], bytes] = _download,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Fetch whatever is missing or of another version into ``target``; the names fetched."""
    registry = registry or os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY
    target.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(target)
    fetched = []
    for package in packages(manifest):
        pinned = f"{package.version} {package.integrity}"
        if stamp.get(package.name) == pinned and all(
            (target / name).is_file() for name in package.files.values()
        ):
            continue
        url = package.tarball_url(registry)
        echo(f"fetching {package.name}@{package.version} from the npm registry")
        try:
            data = download(url)
        except OSError as error:
            raise AssetError(f"could not download {url}: {error}") from error
        check_integrity(data, package.integrity)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member, name in package.files.items():
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise AssetError(f"{package.tarball_name} has no file {member}")
                partial = target / f".{name}.partial"
                partial.write_bytes(extracted.read())
                partial.replace(target / name)
        stamp[package.name] = pinned
        (target / "versions.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
        fetched.append(package.name)
    return fetched


def missing(target: Path, names: tuple[str, ...] = PAGE_FILES) -> list[str]:
    """The page libraries not in ``target`` (a request-time check: a few stat calls)."""
    return [name for name in names if not (target / name).is_file()]
