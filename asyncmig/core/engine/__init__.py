"""The streaming engine: the source and sink interfaces, the pipeline, RU pacing, checkpoints."""
