"""RUNNING a run: the scheduler (`scheduler.py`), a short loop of named steps over explicit state
(`run_state`) and parts that each take what they need: `setup` (executor, probe, sizing, the one GPU
policy), `inbox` (control verbs from other processes), `stops` (kills in progress), `launcher`, `settler`,
`leftovers`, `adopter`, `health_checks`, `gpu_sampler`, `outbox`, `voice`. `control` holds the verbs
themselves, `rules/` the pure decisions the parts apply."""
