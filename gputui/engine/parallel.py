"""`gputui set max_parallel=...` taken by the live scheduler (inbox.py): the run's policy changes at once, so the
next turn launches more, or holds new launches back until fewer run (a running task is never stopped for it);
the value is kept in the run's state, where a scheduler started again for the run takes it up (setup.py)."""

from __future__ import annotations

from collections.abc import Mapping

from gputui.engine.control import parallel_setting
from gputui.engine.launcher import Launcher
from gputui.engine.rules.parallel import BadSetting, change_line
from gputui.engine.setup import RunSetup
from gputui.rundir.meta import read_meta, write_meta
from gputui.rundir.store import Store


class Parallel:
    def __init__(self, setup: RunSetup, launcher: Launcher, store: Store):
        self.setup = setup
        self.launcher = launcher
        self.store = store

    def set(self, args: Mapping) -> tuple[bool, str]:
        """Apply a `set` control's args (`to`, `by`; neither: back to the job file's); the answer's line."""
        old = self.setup.policy.max_parallel
        try:
            n = parallel_setting(old, args, self.setup.job.resources.max_parallel)
        except BadSetting as e:
            return False, str(e)
        with self.store.transaction():  # kept first: a change the state cannot keep is not made
            write_meta(self.store, read_meta(self.store).parallel(n))
            self.setup.set_max_parallel(n)
            line = change_line(old, self.setup.policy.max_parallel, live=True)
            self.store.add_event("max_parallel", line)
        self.launcher.parallel_changed()
        return True, line
