"""The streaming engine: sources, sinks, pipeline, RU governor and checkpoints."""
