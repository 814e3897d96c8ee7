"""The Textual app: a thin, live view over a run directory, with keys that call core verbs."""
