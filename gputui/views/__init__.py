"""Views without a screen: what the app, `gputui status` and the headless printer show of a run, read from
its run directory (`runview`: snapshots; `metrics`: metric series; `executor_facts`: what the recorded executor
says of an attempt; `kinds`: what the run's job kind shows (columns, ranking metric, chart); `processes`: a
task's process tree; `status_view`, `progress`, `printer`)."""
