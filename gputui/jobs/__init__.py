"""WHAT to run: the job file read into a JobSpec (`loader`, with `checks` and `tables`; errors name the file,
the key and what was expected), the job kinds behind one protocol (`kinds/`: the registry is the only place a
kind is named), the tasks a job starts with (`plans`), and the value types every layer shares (`tasks`, `spec`).
Pure: nothing here runs a process."""
