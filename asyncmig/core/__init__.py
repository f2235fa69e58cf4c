"""asyncmig's core: the engine (``engine``), the Cosmos DB boundary (``cosmos``), the file formats
(``files``), and the exact JSON codec and digests they all share."""
