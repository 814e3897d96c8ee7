"""Executors start a task's command somewhere and record how it ended. `local` is the first."""
