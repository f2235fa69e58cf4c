"""Container definitions completed and normalised as Cosmos DB returns them.

Clients read these fields back and act on them: the JavaScript SDK hashes with V1 when the
partition key definition has no ``version``, tools diff indexing policies against what they sent.
So the emulator stores what Cosmos would: ``kind`` filled in, the indexing mode in lower case,
``automatic`` set, ``/*`` included unless a policy already places the root, and ``/"_etag"/?``
always excluded.
"""

from __future__ import annotations

import copy
from typing import Any

ETAG_PATH = '/"_etag"/?'
ROOT_PATH = "/*"


def partition_key_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """``kind`` defaults to Hash; a missing ``version`` stays missing (it means V1, as in Cosmos)."""
    return {**definition, "kind": definition.get("kind") or "Hash"}


def indexing_policy(policy: dict[str, Any] | None) -> dict[str, Any]:
    """The policy Cosmos stores for ``policy`` (``None``: the default, index everything)."""
    result = copy.deepcopy(policy) if isinstance(policy, dict) else {}
    mode = str(result.get("indexingMode") or "consistent").lower()
    result["indexingMode"] = mode
    result.setdefault("automatic", mode != "none")
    included = [p for p in result.get("includedPaths") or [] if isinstance(p, dict)]
    excluded = [p for p in result.get("excludedPaths") or [] if isinstance(p, dict)]
    if mode != "none" and all(p.get("path") != ROOT_PATH for p in included + excluded):
        included.append({"path": ROOT_PATH})
    if mode != "none" and all(p.get("path") != ETAG_PATH for p in excluded):
        excluded.append({"path": ETAG_PATH})
    result["includedPaths"] = included
    result["excludedPaths"] = excluded
    return result
