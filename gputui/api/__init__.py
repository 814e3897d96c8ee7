"""The front door: what the CLI, the app and a script use to plan, run and steer a run."""
