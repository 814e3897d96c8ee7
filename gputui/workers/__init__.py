"""Reference workers gputui ships (the continuation worker for transformers / vLLM, the tiny trainer and model).
Imported only by the processes gputui launches, never by the core."""
