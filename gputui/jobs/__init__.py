"""What a job is, before anything runs: the job file read into a JobSpec (loader.py, with checks.py, tables.py
and health_spec.py; the values in spec.py), its kind (kinds/: shards, sweep, pipeline behind one protocol,
named only in kinds/registry.py), its plan (plans.py), tasks as the store keeps them (tasks.py), the
placeholders filled into commands (templates.py), GPU sizing for a model (gpu_plan.py), the out-of-memory
policy (oom.py) and an input's ids (tabular.py)."""
