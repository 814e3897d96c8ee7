"""Done-manifests: a manifest beside each finished output lets the output folder alone say which shards are
done, and lets the merge notice a file that changed after its shard finished."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from gputui.files.atomic import atomic_write_json
from gputui.jobs.tabular import count_rows


def manifest_path(output: Path) -> Path:
    output = Path(output)
    return output.with_name(f"{output.name}.done.json")


def write_manifest(
    output: Path, *, task_id: str, low: int, high: int, scheduler_id: str, attempt: int, ids: dict | None = None
) -> dict:
    """`ids`: the coverage check's findings on this output as it finished (see results/merge.check_shard);
    the merge trusts them while the file is unchanged, and copies it without reading its ids again.
    The output's size, modification time and inode are recorded with its hash, and the file system's clock
    just before they were read: while they match, later checks trust the file without hashing it."""
    output = Path(output)
    if ids is not None:
        rows = ids["rows"]
    else:
        try:
            rows = count_rows(output)
        except (ValueError, ImportError):  # unknown format, or Parquet without pyarrow: size and hash hold
            rows = None
    clock = _fs_clock(output.parent)
    st, size, digest = _stat_size_and_sha256(output)
    manifest = {
        "task_id": task_id,
        "low": low,
        "high": high,
        "output": output.name,
        "rows": rows,
        "bytes": size,
        "sha256": digest,
        "mtime_ns": st.st_mtime_ns,
        "ino": st.st_ino,
        "fs_clock_ns": clock,
        "ids": ids,
        "scheduler_id": scheduler_id,
        "attempt": attempt,
        "finished_at": time.time(),
    }
    atomic_write_json(manifest_path(output), manifest)
    return manifest


def read_manifest(output: Path) -> dict | None:
    try:
        data = json.loads(manifest_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_matches(output: Path, *, low: int, high: int) -> bool:
    manifest = read_manifest(output)
    return manifest is not None and manifest_mismatch(Path(output), manifest, low, high) is None


def manifest_mismatch(output: Path, manifest: dict, low: int, high: int, *, verify: bool = False) -> str | None:
    """Why the manifest no longer describes `output` for [low, high), or None when it does. A file whose
    stat shows it unchanged is trusted without reading it, unless `verify`: then its hash is compared."""
    if manifest.get("low") != low or manifest.get("high") != high:
        return f"manifest is for range [{manifest.get('low')}, {manifest.get('high')}), not [{low}, {high})"
    try:
        st = output.stat()
    except OSError:
        return "output file is missing"
    if st.st_size != manifest.get("bytes"):
        return f"size is {st.st_size} bytes, manifest says {manifest.get('bytes')}"
    if not verify and unchanged_by_stat(st, manifest):
        return None
    if _stat_size_and_sha256(output)[2] != manifest.get("sha256"):
        return "content changed (sha256 differs)"
    return None


RACY_S = 2.0  # a file modified this close to its manifest may have changed within one mtime tick


def unchanged_by_stat(st: os.stat_result, manifest: dict) -> bool:
    """Unchanged by its stat alone, as git's index and make judge files: the same size (checked before), inode
    and modification time, and that time before the file system's clock when the manifest read them, so that
    any later write would have stamped a later time. Only a deliberate rewrite in place that restores the old
    time and size goes unseen (`gputui merge --verify` hashes every file). Manifests written before the inode
    and the clock were recorded: a time well before the manifest was written."""
    if st.st_mtime_ns != manifest.get("mtime_ns"):
        return False
    ino, clock = manifest.get("ino"), manifest.get("fs_clock_ns")
    if ino is not None and ino != st.st_ino:  # another file now (a copy put back, an atomic rewrite)
        return False
    if isinstance(clock, int) and ino is not None and st.st_mtime_ns < clock:
        return True
    return _settled(st.st_mtime_ns, manifest)


def _settled(mtime_ns: int, manifest: dict) -> bool:
    """The rule for a manifest without the file system's clock: the same modification time, well before the
    manifest was written by this machine's clock (else a write in the same clock tick could hide: hash it)."""
    recorded, written = manifest.get("mtime_ns"), manifest.get("finished_at")
    if not isinstance(recorded, int) or not isinstance(written, (int, float)):
        return False
    return mtime_ns == recorded and written - mtime_ns / 1e9 > RACY_S


def _stat_size_and_sha256(path: Path) -> tuple[os.stat_result, int, str]:
    """The file's stat as it was opened, the bytes read and their hash."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        digest = hashlib.file_digest(f, "sha256")
        return st, f.tell(), digest.hexdigest()


def _fs_clock(folder: Path) -> int | None:
    """The file system's clock now, as it stamps files: the modification time of an unnamed file made in
    `folder` (gone once closed). None where none can be made (NFS, an old kernel): the older rule applies."""
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except (OSError, AttributeError):
        return None
    try:
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)


def file_identity(path: Path) -> dict | None:
    """A file's size, modification time and inode; None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def settled_identity(path: Path) -> dict | None:
    """file_identity, where the file was last changed RACY_S before now (by this machine's clock: the file
    may live on another), so that a later write cannot share its modification time; else None."""
    found = file_identity(path)
    if found is None or time.time() - found["mtime_ns"] / 1e9 <= RACY_S:
        return None
    return found
