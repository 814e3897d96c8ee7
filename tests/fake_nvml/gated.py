"""A worker's front: records its pid, task and GPUs (a line "PID TASK CUDA_VISIBLE_DEVICES" to PIDS), waits
until GATE exists, then becomes the command after it (exec: the same pid), so a test can put the worker on a
fake GPU before it goes on.

    python gated.py PIDS GATE COMMAND...
"""

from __future__ import annotations

import os
import sys
import time


def main() -> None:
    pids, gate, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    with open(pids, "a") as f:  # O_APPEND: one small write per line
        env = os.environ
        f.write(f"{os.getpid()} {env.get('GPUTUI_TASK_ID', '-')} {env.get('CUDA_VISIBLE_DEVICES') or '-'}\n")
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
