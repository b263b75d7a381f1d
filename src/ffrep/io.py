"""Atomic writes and provenance shared by every output of the workflow."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place on success.

    On any error the temporary file is removed, so ``target`` is either the
    old file, absent, or complete: never half written.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private; results are shared like any other file
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except Exception as err:
        _raise_if_disk_full(err, target)
        raise
    finally:
        tmp.unlink(missing_ok=True)


FULL_BYTES = 1 << 20  # a disk with less than this free is taken as full


def _raise_if_disk_full(err: Exception, target: Path) -> None:
    """Writers such as torch.save report a full disk as an obscure error of
    their own; name it."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return
    try:
        stat = os.statvfs(target.parent)
    except OSError:
        return
    if stat.f_bavail * stat.f_frsize < FULL_BYTES:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device while writing {target} ({err}); free some"
            " space and run again: nothing was left half written",
        ) from err


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def git_commit() -> str:
    """The commit of the checkout this package runs from, or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("ffrep", "torch", "numpy", "xarray", "netCDF4", "torchvision"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def torch_file_damage(path: str | Path) -> str | None:
    """What is wrong with a ``torch.save`` file, checked against the CRC-32 that
    its zip container keeps of every member (``torch.load`` checks none), or
    None when every member is intact. Reads the whole file once."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        return f"it is not a torch file ({err})"
    if bad is not None:
        return (
            f"the file is damaged: its part {bad.split('/', 1)[-1]} fails its checksum"
        )
    return None


def torch_file_digest(path: str | Path) -> str:
    """A short identity of a ``torch.save`` file's contents: the CRC-32 and
    size of each member, from the zip directory (nothing else is read)."""
    with zipfile.ZipFile(path) as archive:
        parts = sorted(
            f"{i.filename.split('/', 1)[-1]}:{i.CRC:08x}:{i.file_size}"
            for i in archive.infolist()
        )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
