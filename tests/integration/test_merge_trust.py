"""`gputui merge` after a run, as a user types it: the shards' done-manifests vouch for their outputs and for
their share of the input's ids, so neither the outputs are hashed nor the input read (nor numpy imported)
while nothing changed; a changed input is read again, and `--verify` hashes every output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import gputui

MERGE_IN_PROCESS = (
    "import sys\n"
    "from gputui.cli import main\n"
    "code = main(['merge', '--run-dir', sys.argv[1]])\n"
    "print(code, 'numpy' in sys.modules)\n"
)


def test_a_merge_after_a_run_reads_no_ids_until_the_input_changes_and_verify_hashes_every_output(make_job):
    job = make_job(ids=12, num_workers=3, rows_per_id=1)
    data = make_job.root / "data.csv"
    made = time.time() - 3600  # the input, as a user's: made well before the run
    os.utime(data, (made, made))
    assert gputui("run", "--jobs", job).returncode == 0
    run = make_job.run_dir

    r = subprocess.run([sys.executable, "-c", MERGE_IN_PROCESS, str(run)], capture_output=True, text=True)
    assert r.stdout.splitlines()[-1] == "0 False", r.stdout + r.stderr  # merged, numpy never imported
    summary = json.loads((run / "merge_summary.json").read_text())
    assert summary["ok"] and summary["coverage"] == "as each shard finished" and summary["total_rows"] == 12

    with open(data, "a") as f:  # an id no shard ran: the merge reads the input again and says so
        f.write("99,late\n")
    r = gputui("merge", "--run-dir", run)
    assert r.returncode == 1 and "1 expected id(s) have no output row, e.g. 99" in r.stdout, r.stdout

    data.write_text(data.read_text().replace("99,late\n", ""))
    output = run / "outputs" / "out_4_8.csv"
    st = output.stat()
    with open(output, "r+b") as f:  # rewritten in place, its size and time put back: only a hash sees it
        text = f.read()
        f.seek(0)
        f.write(text.replace(b"ROW4", b"R0W4"))
    os.utime(output, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = gputui("merge", "--run-dir", run, "--verify")
    assert r.returncode == 1 and "shard-1: output changed since it was marked done" in r.stdout, r.stdout
