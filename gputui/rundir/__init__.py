"""The run directory: everything about a run that outlives a process.

Paths and the lock (`paths`), the SQLite store and its schema, the run's identity file, attempt records,
signal and alert files, done-manifests, exports, opening a run for a job (`opening`) and rebuilding its
state from the journal (`rebuild`). Nothing here runs the scheduler: results, views and the app read a
run through this folder.
"""
