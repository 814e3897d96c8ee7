"""Done-manifests: a manifest beside each finished output lets the output folder alone say which shards are
done, and lets the merge notice a file that changed after its shard finished."""

from __future__ import annotations

import hashlib
import json
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
    the merge trusts them while the file is unchanged, and copies it without reading its ids again."""
    output = Path(output)
    if ids is not None:
        rows = ids["rows"]
    else:
        try:
            rows = count_rows(output)
        except (ValueError, ImportError):  # unknown format, or Parquet without pyarrow: size and hash hold
            rows = None
    size, digest = _size_and_sha256(output)
    manifest = {
        "task_id": task_id,
        "low": low,
        "high": high,
        "output": output.name,
        "rows": rows,
        "bytes": size,
        "sha256": digest,
        "mtime_ns": output.stat().st_mtime_ns,
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


def manifest_mismatch(output: Path, manifest: dict, low: int, high: int) -> str | None:
    """Why the manifest no longer describes `output` for [low, high), or None when it does."""
    if manifest.get("low") != low or manifest.get("high") != high:
        return f"manifest is for range [{manifest.get('low')}, {manifest.get('high')}), not [{low}, {high})"
    try:
        st = output.stat()
    except OSError:
        return "output file is missing"
    if st.st_size != manifest.get("bytes"):
        return f"size is {st.st_size} bytes, manifest says {manifest.get('bytes')}"
    if _settled(st.st_mtime_ns, manifest):
        return None
    if _size_and_sha256(output)[1] != manifest.get("sha256"):
        return "content changed (sha256 differs)"
    return None


RACY_S = 2.0  # a file modified this close to its manifest may have changed within one mtime tick


def _settled(mtime_ns: int, manifest: dict) -> bool:
    """Unchanged by its stat alone, as git's index and make judge files: same size and modification time, and
    that time well before the manifest was written (else a write in the same clock tick could hide: hash it).
    Only a deliberate rewrite that restores the old time and size goes unseen."""
    recorded, written = manifest.get("mtime_ns"), manifest.get("finished_at")
    if not isinstance(recorded, int) or not isinstance(written, (int, float)):
        return False
    return mtime_ns == recorded and written - mtime_ns / 1e9 > RACY_S


def _size_and_sha256(path: Path) -> tuple[int, str]:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return f.tell(), digest.hexdigest()
