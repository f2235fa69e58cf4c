"""asyncmig: fast, RU-aware, resumable and provably lossless moves between Cosmos DB containers."""

__version__ = "0.1.0"
