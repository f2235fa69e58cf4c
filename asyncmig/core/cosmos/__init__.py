"""The Cosmos DB boundary: clients, request signing, partition keys, error classification, the
Cosmos source and sink."""
