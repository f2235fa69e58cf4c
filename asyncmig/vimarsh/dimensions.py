"""The embedding dimension of a data set, decided the same way wherever it is needed.

Creating the containers (from the legacy container), backing up (from the backup file) and
validating (from the transformed documents) each detect the dimension the vector index is built
for. They must agree, so there is one rule: the most common length among the non-empty lists in
the ``embedding`` field; on a tie, the longer length. The data set's history holds legacy
384-dimension vectors next to the current model's 768 ones: the current model is the larger, and a
rule that does not depend on the order the documents were read in gives the same answer on every
run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["DimensionTally", "vector_length"]


def vector_length(value: Any) -> int | None:
    """The length of ``value`` when it is a non-empty list (a vector), else ``None``."""
    return len(value) if isinstance(value, list) and value else None


class DimensionTally:
    """Counts vector lengths; :meth:`most_common` applies the one rule."""

    def __init__(self) -> None:
        self.lengths: Counter[int] = Counter()

    def add(self, value: Any) -> None:
        """Count ``value`` if it is a vector (anything else is ignored)."""
        length = vector_length(value)
        if length is not None:
            self.lengths[length] += 1

    def add_length(self, length: int, count: int = 1) -> None:
        """Count vectors known only by their length (e.g. from ``ARRAY_LENGTH`` in a query)."""
        if length > 0:
            self.lengths[length] += count

    def most_common(self) -> int | None:
        """The most common length; a tie goes to the longer one. ``None`` when nothing was counted."""
        if not self.lengths:
            return None
        return max(self.lengths.items(), key=lambda item: (item[1], item[0]))[0]
