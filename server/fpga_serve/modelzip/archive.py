"""Writing pipeline zips, and reading untrusted ones safely.

Reading validates everything before a single byte is written to disk: the manifest, every member
name, the member set against the manifest's file list, size and ratio limits (zip bombs), and the
sha256 and size of every member (streamed; a member is abandoned as soon as it exceeds its
declared size). Only then are members written, by us, into a fresh private directory.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fpga_serve.core.errors import ModelLoadError, shown
from fpga_serve.modelzip.manifest import MANIFEST_NAME, FileRecord, Manifest, parse_manifest

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds on what an archive may expand to."""

    max_members: int = 10_000
    max_total_bytes: int = 8 << 30
    max_member_bytes: int = 4 << 30
    max_ratio: float = 200.0
    """Uncompressed / compressed size of one member (weights compress ~1-3x, bombs ~1000x)."""
    max_manifest_bytes: int = 4 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_records(root: Path) -> dict[str, FileRecord]:
    """sha256 and size of every file under ``root``, by POSIX relative path."""
    records = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        records[rel] = FileRecord(sha256_file(path), path.stat().st_size)
    return records


def write_archive(manifest: Manifest, root: Path, zip_path: Path) -> None:
    """Write ``root``'s files (which ``manifest.files`` describes) and the manifest."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_info(MANIFEST_NAME), manifest.dumps(), compress_type=zipfile.ZIP_DEFLATED)
        for member in sorted(manifest.files):
            with (root / member).open("rb") as src, zf.open(_info(member), "w") as dst:
                for block in iter(lambda: src.read(_CHUNK), b""):
                    dst.write(block)
    os.replace(tmp, zip_path)


def _info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _check_name(name: str) -> None:
    path = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or (len(name) > 1 and name[1] == ":")
        or any(part in ("..", ".", "") for part in name.split("/"))
        or path.is_absolute()
    ):
        raise ModelLoadError(f"member {shown(name)} has an unsafe path (absolute, '..', or odd)")


def _check_entry(info: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    name = info.filename
    _check_name(name)
    mode = (info.external_attr >> 16) & 0o170000
    if info.is_dir() or (mode and mode != stat.S_IFREG):
        raise ModelLoadError(f"member {shown(name)} is not a regular file (link, device or folder)")
    if info.flag_bits & 0x1:
        raise ModelLoadError(f"member {shown(name)} is encrypted")
    if info.file_size > limits.max_member_bytes:
        raise ModelLoadError(
            f"member {shown(name)} expands to {info.file_size} bytes, over the limit"
        )
    if info.file_size > 1 << 16 and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        raise ModelLoadError(
            f"member {shown(name)} expands {ratio:.0f}x, over "
            f"the ratio limit of {limits.max_ratio:.0f}x (zip bomb?)"
        )


_CORRUPT = (zlib.error, zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError)
"""What zipfile raises for a damaged member: bad deflate data (zlib.error), a bad CRC-32
(BadZipFile), a stream that ends early (EOFError), an unsupported method (NotImplementedError)."""


def _stream(zf: zipfile.ZipFile, name: str, limit: int) -> Iterator[bytes]:
    """The member's bytes, stopping with an error as soon as more than ``limit`` arrive; a
    damaged member is a ModelLoadError naming it."""
    seen = 0
    try:
        with zf.open(name) as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                seen += len(block)
                if seen > limit:
                    raise ModelLoadError(f"member {shown(name)} is larger than the manifest says")
                yield block
    except _CORRUPT as exc:
        reason = str(exc).split(" for file ")[0]  # zipfile repeats the name
        raise ModelLoadError(
            f"member {shown(name)} is corrupt ({type(exc).__name__}: {reason})"
        ) from exc


def validate_archive(zip_path: Path, limits: ArchiveLimits | None = None) -> Manifest:
    """Check an untrusted archive completely without writing anything; return its manifest."""
    limits = limits or ArchiveLimits()
    try:
        zf = zipfile.ZipFile(zip_path)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{zip_path}: no such file") from exc
    except (*_CORRUPT, struct.error, zipfile.LargeZipFile) as exc:
        raise ModelLoadError(f"{zip_path}: not a readable zip archive ({exc})") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise ModelLoadError(f"{zip_path}: {len(infos)} members, over the limit")
        seen: set[str] = set()
        for info in infos:
            _check_entry(info, limits)
            if info.filename in seen:
                raise ModelLoadError(f"member {shown(info.filename)} appears twice")
            seen.add(info.filename)
        if MANIFEST_NAME not in seen:
            raise ModelLoadError(f"{zip_path}: missing {MANIFEST_NAME} (not a pipeline zip?)")
        if zf.getinfo(MANIFEST_NAME).file_size > limits.max_manifest_bytes:
            raise ModelLoadError(f"{MANIFEST_NAME} is over {limits.max_manifest_bytes} bytes")
        raw = b"".join(_stream(zf, MANIFEST_NAME, limits.max_manifest_bytes))
        manifest = parse_manifest(raw)
        members = seen - {MANIFEST_NAME}
        for name in sorted(manifest.files):
            _check_name(name)
            if name not in members:
                raise ModelLoadError(
                    f"member {shown(name)} is listed in {MANIFEST_NAME} but missing"
                )
        extra = sorted(members - set(manifest.files))
        if extra:
            raise ModelLoadError(f"member {shown(extra[0])} is not listed in {MANIFEST_NAME}")
        total = sum(r.size for r in manifest.files.values())
        if total > limits.max_total_bytes:
            raise ModelLoadError(f"{zip_path}: expands to {total} bytes, over the limit")
        for name, record in sorted(manifest.files.items()):
            if zf.getinfo(name).file_size != record.size:
                raise ModelLoadError(f"member {shown(name)} has a size the manifest does not list")
            digest = hashlib.sha256()
            size = 0
            for block in _stream(zf, name, record.size):
                digest.update(block)
                size += len(block)
            if size != record.size or digest.hexdigest() != record.sha256:
                raise ModelLoadError(f"member {shown(name)} does not match its sha256 (tampered?)")
    return manifest


def extract_archive(zip_path: Path, manifest: Manifest, parent: Path | None = None) -> Path:
    """Write a validated archive's members into a new private directory and return it.

    Each member is hashed again while written, so a file swapped after validation is caught.
    """
    dest = Path(tempfile.mkdtemp(prefix="fpga-serve-model-", dir=parent))
    with zipfile.ZipFile(zip_path) as zf:
        for name, record in sorted(manifest.files.items()):
            target = dest.joinpath(*name.split("/"))
            if dest not in target.resolve().parents:
                raise ModelLoadError(f"member {shown(name)} escapes the extraction directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with target.open("xb") as out:
                for block in _stream(zf, name, record.size):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != record.sha256:
                raise ModelLoadError(f"member {shown(name)} changed while loading")
    return dest
