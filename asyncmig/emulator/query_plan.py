"""Query plans: how the emulator tells an SDK to run a cross-partition query itself.

Cosmos DB's gateway does not merge ORDER BY, aggregates, DISTINCT, TOP or OFFSET/LIMIT across
physical partitions. It refuses such a query with 400 and substatus 1004; the SDK then asks for a
*query plan* (a POST flagged ``x-ms-cosmos-is-query-plan-request``), sends the plan's rewritten
query to every partition key range, and merges the partial results in its own pipeline (a heap
over ``orderByItems``, aggregators that add partial counts and sums, de-duplication, skip/take).

This module builds that plan from the emulator's parsed query. The rewritten query is real SQL that
the emulator's engine runs per range:

* ORDER BY: ``SELECT c._rid, [{"item": <key>}, ...] AS orderByItems, <projection> AS payload``
  with ``{documentdb-formattableorderbyquery-filter}`` ANDed into WHERE (the SDK replaces the
  placeholder with ``true``; it exists for resuming a merge from a continuation).
* ``SELECT VALUE AGG(x)``: ``SELECT VALUE [{"item": AGG(x)}]``; AVG travels as its sum and count.
* OFFSET m LIMIT n: every range returns its first m + n rows (``OFFSET 0 LIMIT m+n``); the SDK
  skips and takes. TOP n stays, each range returns at most n.
"""

from __future__ import annotations

import math
import re
from typing import Any

from asyncmig.core import jsoncodec
from asyncmig.emulator.protocol import CosmosError, flag
from asyncmig.emulator.query import CompiledQuery, QueryError, bound_count

ORDER_BY_FILTER = "{documentdb-formattableorderbyquery-filter}"
FULL_RANGE = {"min": "", "max": "FF", "isMinInclusive": True, "isMaxInclusive": False}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = frozenset(
    "and array as asc between by desc distinct escape exists false from group in join like limit not null "
    "offset or order select top true udf undefined value where".split())
_AGGREGATE_NAMES = {"COUNT": "Count", "SUM": "Sum", "MIN": "Min", "MAX": "Max", "AVG": "Average"}


def check_cross_partition(compiled: CompiledQuery, headers: Any, range_count: int) -> None:
    """Refuse, as Cosmos DB's gateway does, a query over several ranges that it would not run itself.

    A query scoped by ``x-ms-documentdb-partitionkeyrangeid`` or a partition key reaches one range
    and is always served. Otherwise a client must opt in to fan-out with
    ``x-ms-documentdb-query-enablecrosspartition``, and a query whose partial results need merging
    (not streamable) gets 400/1004 carrying the plan, which sends the SDK to its own pipeline.
    """
    if range_count <= 1 or headers.get("x-ms-documentdb-partitionkeyrangeid") is not None:
        return
    if not flag(headers, "x-ms-documentdb-query-enablecrosspartition"):
        raise CosmosError(400, "Cross partition query is required but disabled. Please set "
                               "x-ms-documentdb-query-enablecrosspartition to true, specify "
                               "x-ms-documentdb-partitionkey, or revise your query to avoid this exception.")
    if not compiled.streamable:
        try:
            info = plan(compiled)
        except QueryError as exc:
            raise CosmosError(400, f"Query is not supported or invalid: {exc}") from exc
        raise CosmosError(
            400, "Cross partition query with TOP/ORDER BY, aggregates, DISTINCT or OFFSET/LIMIT is not served by "
                 "the gateway; run it through the query plan.",
            substatus=1004, extra={"additionalErrorInfo": jsoncodec.dumps(info).decode()},
        )


def plan(compiled: CompiledQuery) -> dict[str, Any]:
    """The ``partitionedQueryExecutionInfo`` for a query (queryInfo plus the EPK ranges it reads)."""
    query, params = compiled.parsed, compiled.params
    top = bound_count(query.top, params, "TOP")
    offset = bound_count(query.offset, params, "OFFSET")
    limit = bound_count(query.limit, params, "LIMIT")
    aggregates: list[str] = []
    if query.aggregate:
        if query.select != "value" or query.value is None or query.value[0] != "agg":
            raise QueryError("unsupported across partitions: aggregates other than SELECT VALUE <aggregate>(...); "
                             "scope the query to one partition key")
        aggregates.append(_AGGREGATE_NAMES[query.value[1]])
    # An aggregate yields one row per range, so an ORDER BY beside it orders nothing: no merge by it.
    order = () if query.aggregate else query.order
    distinct = "None" if not query.distinct else ("Ordered" if order else "Unordered")
    info: dict[str, Any] = {
        "distinctType": distinct,
        "top": top,
        "offset": offset,
        "limit": limit,
        "orderBy": ["Descending" if descending else "Ascending" for _, descending in order],
        "orderByExpressions": [_sql(expr) for expr, _ in order],
        "groupByExpressions": [],
        "groupByAliases": [],
        "aggregates": aggregates,
        "groupByAliasToAggregateType": {},
        "rewrittenQuery": _rewrite(compiled, top, offset, limit),
        "hasSelectValue": query.select == "value",
        "hasNonStreamingOrderBy": False,
    }
    return {"partitionedQueryExecutionInfoVersion": 2, "queryInfo": info, "queryRanges": [FULL_RANGE]}


def _rewrite(compiled: CompiledQuery, top: int | None, offset: int | None, limit: int | None) -> str:
    """The per-range query, or "" when the original can run unchanged on every range."""
    query = compiled.parsed
    alias = query.alias
    if not (query.order or query.aggregate or offset is not None):
        return ""
    head = "SELECT " + ("DISTINCT " if query.distinct else "") + (f"TOP {top} " if top is not None else "")
    where = _sql(query.where) if query.where is not None else None
    if query.order and not query.aggregate:
        items = ", ".join('{"item": ' + _sql(expr) + "}" for expr, _ in query.order)
        rid = "" if query.distinct else f"{alias}._rid, "
        select = f"{head}{rid}[{items}] AS orderByItems, {_projection(compiled)} AS payload"
        condition = f"({ORDER_BY_FILTER})" if where is None else f"(({where}) AND ({ORDER_BY_FILTER}))"
        order = ", ".join(_sql(expr) + (" DESC" if descending else " ASC") for expr, descending in query.order)
        text = f"{select}\nFROM {alias}\nWHERE {condition}\nORDER BY {order}"
    elif query.aggregate:
        assert query.value is not None
        name, argument = query.value[1], _sql(query.value[2])
        if name == "AVG":
            item = f'"item": {{"sum": SUM({argument}), "count": COUNT({argument})}}'
        elif name in ("MIN", "MAX"):
            # "item" for SDKs that merge plain values (Python), "item2" for those that want the
            # extreme with its count (JavaScript), as newer Cosmos DB versions send both.
            item = (f'"item": {name}({argument}), '
                    f'"item2": {{"{name.lower()}": {name}({argument}), "count": COUNT({argument})}}')
        else:
            item = f'"item": {name}({argument})'
        text = f'{head}VALUE [{{{item}}}]\nFROM {alias}' + (f"\nWHERE {where}" if where else "")
    else:
        projection = "*" if query.select == "star" else _projection(compiled)
        text = f"{head}{projection}\nFROM {alias}" + (f"\nWHERE {where}" if where else "")
    if offset is not None:
        text += f"\nOFFSET 0 LIMIT {offset + (limit or 0)}"
    return text


def _projection(compiled: CompiledQuery) -> str:
    query = compiled.parsed
    if query.select == "star":
        return query.alias
    if query.select == "value":
        assert query.value is not None
        return ("VALUE " if not query.order else "") + _sql(query.value)
    return "{" + ", ".join(f"{_string(name)}: {_sql(expr)}" for name, expr in query.items) + "}"


def _string(value: str) -> str:
    return jsoncodec.dumps(value).decode()


def _sql(node: Any) -> str:
    """SQL text for an AST node; fully parenthesised so precedence never changes on re-parsing."""
    tag = node[0]
    if tag == "const":
        value = node[1]
        if type(value) is float and not math.isfinite(value):
            raise QueryError("a non-finite number cannot appear in a query")
        return jsoncodec.dumps(value).decode()
    if tag in ("param", "ident"):
        return str(node[1])
    if tag == "prop":
        name = node[2]
        if _IDENTIFIER.fullmatch(name) and name.lower() not in _KEYWORDS:
            return f"{_sql(node[1])}.{name}"
        return f"{_sql(node[1])}[{_string(name)}]"
    if tag == "index":
        return f"{_sql(node[1])}[{_sql(node[2])}]"
    if tag == "op":
        return f"({_sql(node[2])} {node[1]} {_sql(node[3])})"
    if tag in ("and", "or"):
        return "(" + f" {tag.upper()} ".join(_sql(n) for n in node[1]) + ")"
    if tag == "not":
        return f"(NOT {_sql(node[1])})"
    if tag == "neg":
        return f"(-{_sql(node[1])})"
    if tag == "pos":
        return f"(+{_sql(node[1])})"
    if tag == "in":
        return f"({_sql(node[1])}{' NOT' if node[3] else ''} IN ({', '.join(_sql(n) for n in node[2])}))"
    if tag == "between":
        return f"({_sql(node[1])}{' NOT' if node[4] else ''} BETWEEN {_sql(node[2])} AND {_sql(node[3])})"
    if tag == "cond":
        return f"({_sql(node[1])} ? {_sql(node[2])} : {_sql(node[3])})"
    if tag == "array":
        return "[" + ", ".join(_sql(n) for n in node[1]) + "]"
    if tag == "object":
        return "{" + ", ".join(f"{_string(k)}: {_sql(v)}" for k, v in node[1]) + "}"
    if tag in ("call", "agg"):
        args = node[2] if tag == "call" else (node[2],)
        return f"{node[1]}({', '.join(_sql(n) for n in args)})"
    raise AssertionError(f"unknown AST node {tag}")
