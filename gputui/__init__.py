"""gputui: watch GPUs, launch sharded jobs, and control only the processes this scheduler owns."""

__version__ = "0.1.0"
