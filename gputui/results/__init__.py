"""WHAT comes out of a run: the merge of shard outputs (`merge`, one reader per format beside it, coverage
checked by `idcheck`/`idscan`), the run's summary and report (`report`), per-task products and sweep results
tables (`products`, `task_summary`), and `finalize`, which runs them at a run's end or from the menu."""
