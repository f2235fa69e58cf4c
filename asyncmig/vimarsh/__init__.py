"""The Vimarsh migration: legacy 3-container layout to the 11-container layout (plus ``users`` in place).

Pure Python only: the plan as data (:mod:`.plan`), the per-document transforms (:mod:`.transforms`),
the personalities generator (:mod:`.personalities`) and the seeded demo data set (:mod:`.demo_data`).
Nothing in this package talks to Cosmos DB, so all of it can be tested without an account.
"""
