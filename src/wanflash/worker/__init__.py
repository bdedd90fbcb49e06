"""Worker: supervisor (claims, heartbeats, completes) and executors that run the pipeline."""
