"""A GPU box's policy, written by its admin for everyone who runs gputui on it: `/etc/gputui/policy.toml`
(`$GPUTUI_POLICY` names another file, for tests).

    max_gpus_per_user = 2      # GPUs one user's runs hold at once, all runs together
    reserved_gpus = [6, 7]     # kept for interactive use: gputui never claims them

Read like a job file (every error names the file, the key and what was expected); no file is no policy. The rules
are pure (`room`, `claimable`, the words a waiting task shows) and the launcher enforces them at claim time,
counting this user's live claims in the machine's map of GPU reservations (gpus/reservations.py)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gputui.jobs.checks import Checks, got, is_int, toml_position
from gputui.jobs.spec import JobSpecError

DEFAULT_PATH = Path("/etc/gputui/policy.toml")
KEYS = ("max_gpus_per_user", "reserved_gpus")


@dataclass(frozen=True)
class BoxPolicy:
    max_gpus_per_user: int | None = None
    reserved_gpus: frozenset[int] = frozenset()
    path: str = ""  # the file it was read from ("" when there is none)

    def room(self, held_by_user: int) -> int | None:
        """GPUs this user may claim now, holding `held_by_user` (None: no limit)."""
        if self.max_gpus_per_user is None:
            return None
        return max(0, self.max_gpus_per_user - held_by_user)

    def claimable(self, indices: Iterable[int]) -> list[int]:
        """These GPUs, less those kept for interactive use."""
        return [i for i in indices if i not in self.reserved_gpus]

    def limit_reason(self, held_by_user: int) -> str:
        """Why a task waits while this user holds as many GPUs as the policy allows."""
        n = self.max_gpus_per_user
        return f"policy: at most {n} GPU{'s' if n != 1 else ''} per user (you hold {held_by_user})"


def policy_path() -> Path:
    return Path(os.environ.get("GPUTUI_POLICY") or DEFAULT_PATH)


def read_box_policy(path: Path | None = None) -> BoxPolicy:
    """The policy in `path` (the box's by default); no policy where there is no file. JobSpecError for a file that
    cannot be read or says something wrong."""
    path = policy_path() if path is None else Path(path)
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return BoxPolicy()
    except OSError as e:
        raise JobSpecError(f"{where}: cannot read the GPU box policy: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise JobSpecError(f"{where}: cannot read the GPU box policy: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise JobSpecError(f"{where}: TOML syntax error {toml_position(str(e))}") from None
    return parse_box_policy(data, where)


def parse_box_policy(data: dict, where: str) -> BoxPolicy:
    checks = Checks(where, Path(where).parent)
    checks.check_keys(data, "policy", KEYS)
    limit = data.get("max_gpus_per_user")
    if limit is not None and not (is_int(limit) and limit >= 0):
        raise checks.error("max_gpus_per_user", f"expected a non-negative integer, {got(limit)}")
    reserved = data.get("reserved_gpus", [])
    if not isinstance(reserved, list) or not all(is_int(i) and i >= 0 for i in reserved):
        raise checks.error("reserved_gpus", f"expected an array of GPU indices (integers >= 0), {got(reserved)}")
    return BoxPolicy(limit, frozenset(reserved), where)


class PolicyFile:
    """The box policy as it is now: read again when its file changes (an admin's edit applies to running runs).
    A file broken by an edit keeps the policy last read, told once through `warn`; one broken from the start is
    a refusal (JobSpecError from `current` the first time)."""

    def __init__(self, path: Path | None = None, warn=None):
        self.path = policy_path() if path is None else Path(path)
        self.warn = warn
        self._stamp: tuple | None = None
        self._policy: BoxPolicy | None = None

    def current(self) -> BoxPolicy:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if self._policy is not None and stamp == self._stamp:
            return self._policy
        try:
            policy = read_box_policy(self.path)
        except JobSpecError as e:
            if self._policy is None:
                raise
            if self.warn is not None:
                self.warn(f"{e} (keeping the policy read before)")
            self._stamp = stamp
            return self._policy
        self._policy, self._stamp = policy, stamp
        return policy
