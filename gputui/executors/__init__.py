"""WHERE a task runs. `base.py` is the Executor protocol every backend implements (and the recorded side
that views and other processes use); `registry.py` chooses one by kind, the only place a kind is named.
`local.py` (keeper, waiters), `ray_executor.py` (through the run's bridge: `ray_client.py`, `ray_bridge.py`)
and `slurm_executor.py` (sbatch, stand-ins: `slurm.py`, `slurm_task.py`, `slurm_runner.py`) implement it; every
attempt ends as lines in the attempts journal (`journal.py`), whichever ran it."""
