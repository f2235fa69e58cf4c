"""The emulator's Cosmos DB (NoSQL API) SQL query engine.

A query is parsed once per text (LALR grammar in ``cosmos_sql.lark``, cached with ``lru_cache``) into a
small tuple AST, then every :func:`compile_query` call binds the parameters and turns the AST into
nested Python closures, so evaluating a document runs no parser and walks no tree.

Supported (keywords case-insensitive, ``true``/``false``/``null`` lowercase as in Cosmos DB):

* ``SELECT [DISTINCT] [TOP n] * | VALUE expr | expr [AS name], ...  FROM <name> [[AS] alias]
  [WHERE expr] [ORDER BY expr [ASC|DESC], ...] [OFFSET m LIMIT n]``; TOP/OFFSET/LIMIT take
  literals or ``@parameters``.
* Expressions: property paths ``c.a.b``, ``c["x y"]``, ``c.arr[0]``, ``c[expr]``; literals; ``@params``
  wherever a literal may appear; array ``[...]`` and object ``{"k": ...}`` constructors;
  ``= != <> < > <= >=``, ``AND OR NOT``, ``IN (...)``, ``[NOT] BETWEEN x AND y``, ``+ - * / %``,
  ``||`` (string concatenation), ``??`` (coalesce) and ``cond ? a : b``. Precedence is that of the
  grammar the Cosmos SDKs ship (see ``cosmos_sql.lark``): NOT is a unary operator, so ``NOT a = b``
  means ``(NOT a) = b``, and ``||`` binds more loosely than comparisons.
* Functions: IS_DEFINED, IS_NULL, IS_STRING, IS_NUMBER, IS_BOOL, IS_ARRAY, IS_OBJECT,
  IS_PRIMITIVE, ARRAY_CONTAINS, ARRAY_LENGTH, ARRAY_CONCAT, CONTAINS, STARTSWITH, ENDSWITH,
  INDEX_OF, LOWER, UPPER, LENGTH, CONCAT, SUBSTRING, TRIM, LTRIM, RTRIM, ABS, FLOOR, CEILING, ROUND.
* Aggregates COUNT, SUM, MIN, MAX, AVG in the SELECT list or in ``SELECT VALUE`` (also nested in
  object/array constructors), as long as every document reference sits inside an aggregate; an
  ORDER BY beside them is accepted and changes nothing (the aggregate yields one row).

Refused with :class:`QueryError` naming the construct, never answered wrongly: JOIN, ``FROM x IN``,
FROM over a path or subquery, GROUP BY, LIKE, subqueries (EXISTS, ARRAY, ...), ``udf.*``, bitwise
operators, queries without FROM and any function not listed above.

Cosmos semantics reproduced: a missing property is *undefined*; comparing undefined or values of
different types gives undefined, as does ordering (``<`` ...) or ``!=`` between arrays or objects;
``=`` compares arrays and objects deeply; AND/OR/NOT are three-valued; WHERE keeps a document only
when the condition is exactly ``true``; undefined values vanish from projected objects and arrays,
and a ``SELECT VALUE`` row that is undefined is dropped. Numbers: integers stay ``int`` (big ones
too), ``1 = 1.0`` is true, booleans are never numbers, ``/`` of two integers stays an integer when
exact. Cross-type ordering (ORDER BY, MIN/MAX): undefined < null < false < true < numbers < strings
< arrays < objects; ties keep storage order. SUM and AVG ignore non-numbers (Cosmos DB itself
returns undefined when any value is not a number); MIN/MAX give undefined if they meet an array
or object. String functions count Python code points, not UTF-16 units.

Results share structure with the input documents (``SELECT *`` returns the document itself):
treat them as read-only.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

__all__ = ["UNDEFINED", "CompiledQuery", "QueryError", "bound_count", "compile_query"]


class QueryError(ValueError):
    """Malformed or unsupported query; ``str(exc)`` is shown to the user, so it names the problem."""


class _Undefined:
    """Type of :data:`UNDEFINED`; a class of its own so ``type(v)`` dispatch can recognise it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()
"""Cosmos DB's *undefined*: the value of a missing property or of an ill-typed operation."""

Node = tuple[Any, ...]
Fn = Callable[[Any], Any]

# ---------------------------------------------------------------------------------------------------
# Value semantics
# ---------------------------------------------------------------------------------------------------

_U, _NULL, _BOOL, _NUM, _STR, _ARRAY, _OBJECT = range(7)
_KIND: dict[type, int] = {
    _Undefined: _U, type(None): _NULL, bool: _BOOL, int: _NUM, float: _NUM,
    str: _STR, list: _ARRAY, dict: _OBJECT,
}


def _kind(value: Any) -> int:
    """Cosmos type of a JSON value; a KeyError here means a non-JSON value reached the engine."""
    return _KIND[type(value)]


def _is_num(value: Any) -> bool:
    t = type(value)
    return t is int or t is float


def _deep_equal(a: Any, b: Any) -> bool:
    """Cosmos ``=`` inside arrays/objects: types must match exactly (``true`` is not ``1``)."""
    ka = _kind(a)
    if ka != _kind(b):
        return False
    if ka == _ARRAY:
        return len(a) == len(b) and all(map(_deep_equal, a, b))
    if ka == _OBJECT:
        return a.keys() == b.keys() and all(_deep_equal(v, b[k]) for k, v in a.items())
    return bool(a == b)


def _eq(a: Any, b: Any) -> Any:
    ka = _kind(a)
    if ka == _U or ka != _kind(b):
        return UNDEFINED
    return _deep_equal(a, b) if ka >= _ARRAY else a == b


def _ne(a: Any, b: Any) -> Any:
    ka = _kind(a)
    if ka == _U or ka >= _ARRAY or ka != _kind(b):
        return UNDEFINED
    return a != b


def _relational(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], Any]:
    """Ordering comparisons exist only between two primitives of the same type."""

    def compare(a: Any, b: Any) -> Any:
        ka = _kind(a)
        if ka == _U or ka >= _ARRAY or ka != _kind(b):
            return UNDEFINED
        return op(0, 0) if ka == _NULL else op(a, b)

    return compare


def _divide(a: Any, b: Any) -> Any:
    """True division that keeps an exact integer quotient an ``int`` (``6 / 3`` is ``2``, not ``2.0``)."""
    if type(a) is int and type(b) is int:
        quotient, remainder = divmod(a, b)
        if remainder == 0:
            return quotient
    return a / b


def _modulo(a: Any, b: Any) -> Any:
    """Remainder with the sign of the dividend, as in Cosmos DB (and C), not Python's floored ``%``."""
    if type(a) is int and type(b) is int:
        remainder = abs(a) % abs(b)
        return -remainder if a < 0 else remainder
    return math.fmod(a, b)


def _arithmetic(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Numbers only; division by zero, overflow and non-finite results give undefined (JSON has no inf)."""

    def apply(a: Any, b: Any) -> Any:
        if not (_is_num(a) and _is_num(b)):
            return UNDEFINED
        try:
            result = op(a, b)
        except (ZeroDivisionError, OverflowError, ValueError):
            return UNDEFINED
        if type(result) is float and not math.isfinite(result):
            return UNDEFINED
        return result

    return apply


def _string_concat(a: Any, b: Any) -> Any:
    return a + b if type(a) is str and type(b) is str else UNDEFINED


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "=": _eq,
    "!=": _ne,
    "<": _relational(operator.lt),
    ">": _relational(operator.gt),
    "<=": _relational(operator.le),
    ">=": _relational(operator.ge),
    "+": _arithmetic(operator.add),
    "-": _arithmetic(operator.sub),
    "*": _arithmetic(operator.mul),
    "/": _arithmetic(_divide),
    "%": _arithmetic(_modulo),
    "||": _string_concat,
}
_SWAPPED = {"=": "=", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_RELATIONAL_OPS = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


def _and(values: Iterable[Any]) -> Any:
    """Three-valued AND: any ``false`` wins, all ``true`` is true, anything else is undefined."""
    result: Any = True
    for value in values:
        if value is False:
            return False
        if value is not True:
            result = UNDEFINED
    return result


def _or(values: Iterable[Any]) -> Any:
    """Three-valued OR: any ``true`` wins, all ``false`` is false, anything else is undefined."""
    result: Any = False
    for value in values:
        if value is True:
            return True
        if value is not False:
            result = UNDEFINED
    return result


def _not(value: Any) -> Any:
    if value is True:
        return False
    return True if value is False else UNDEFINED


def _order_key(value: Any) -> tuple[Any, ...]:
    """Sort key in Cosmos cross-type order; equal keys mean Cosmos-equal values, so DISTINCT uses it too."""
    t = type(value)
    if t is str:
        return (_STR, value)
    if t is int or t is float:
        return (_NUM, value)
    if t is bool:
        return (_BOOL, value)
    if value is None:
        return (_NULL,)
    if t is list:
        return (_ARRAY, tuple(map(_order_key, value)))
    if t is dict:
        return (_OBJECT, tuple(sorted((k, _order_key(v)) for k, v in value.items())))
    if value is UNDEFINED:
        return (_U,)
    raise TypeError(f"not a JSON value: {value!r}")


# ---------------------------------------------------------------------------------------------------
# System functions: each returns undefined when an argument has the wrong type, as Cosmos DB does.
# ---------------------------------------------------------------------------------------------------


def _array_contains(array: Any, item: Any, partial: Any = False) -> Any:
    if type(array) is not list or type(partial) is not bool:
        return UNDEFINED
    if partial and type(item) is dict:
        return any(
            type(e) is dict and all(k in e and _deep_equal(e[k], v) for k, v in item.items()) for e in array
        )
    return any(_deep_equal(e, item) for e in array)


def _string_test(test: Callable[[str, str], bool]) -> Callable[..., Any]:
    """CONTAINS / STARTSWITH / ENDSWITH share the (string, string[, ignoreCase]) signature."""

    def apply(s: Any, sub: Any, ignore_case: Any = False) -> Any:
        if type(s) is not str or type(sub) is not str or type(ignore_case) is not bool:
            return UNDEFINED
        if ignore_case:
            s, sub = s.lower(), sub.lower()
        return test(s, sub)

    return apply


def _on_string(f: Callable[[str], Any]) -> Callable[[Any], Any]:
    return lambda s: f(s) if type(s) is str else UNDEFINED


def _on_number(int_f: Callable[[int], Any], float_f: Callable[[float], Any]) -> Callable[[Any], Any]:
    """Integers and floats get separate implementations so integers never turn into floats."""

    def apply(x: Any) -> Any:
        t = type(x)
        if t is int:
            return int_f(x)
        return float_f(x) if t is float else UNDEFINED

    return apply


def _concat(*parts: Any) -> Any:
    return "".join(parts) if all(type(p) is str for p in parts) else UNDEFINED


def _array_concat(*parts: Any) -> Any:
    return [v for p in parts for v in p] if all(type(p) is list for p in parts) else UNDEFINED


def _substring(s: Any, start: Any, length: Any) -> Any:
    if type(s) is not str or not (_is_num(start) and _is_num(length)):
        return UNDEFINED
    begin = max(0, int(start))
    return s[begin : begin + max(0, int(length))]


def _index_of(s: Any, sub: Any) -> Any:
    return s.find(sub) if type(s) is str and type(sub) is str else UNDEFINED


def _round_half_away(x: float) -> float:
    """Cosmos ROUND rounds halves away from zero; Python's round() rounds them to even."""
    magnitude = abs(x)
    whole = math.floor(magnitude)
    return math.copysign(whole + 1 if magnitude - whole >= 0.5 else whole, x)


def _identity(x: Any) -> Any:
    return x


# name -> (min args, max args, implementation)
_FUNCTIONS: dict[str, tuple[int, int, Callable[..., Any]]] = {
    "IS_DEFINED": (1, 1, lambda v: v is not UNDEFINED),
    "IS_NULL": (1, 1, lambda v: v is None),
    "IS_STRING": (1, 1, lambda v: type(v) is str),
    "IS_NUMBER": (1, 1, _is_num),
    "IS_BOOL": (1, 1, lambda v: type(v) is bool),
    "IS_ARRAY": (1, 1, lambda v: type(v) is list),
    "IS_OBJECT": (1, 1, lambda v: type(v) is dict),
    "IS_PRIMITIVE": (1, 1, lambda v: _NULL <= _kind(v) <= _STR),
    "ARRAY_CONTAINS": (2, 3, _array_contains),
    "ARRAY_LENGTH": (1, 1, lambda a: len(a) if type(a) is list else UNDEFINED),
    "ARRAY_CONCAT": (2, 64, _array_concat),
    "CONTAINS": (2, 3, _string_test(operator.contains)),
    "STARTSWITH": (2, 3, _string_test(str.startswith)),
    "ENDSWITH": (2, 3, _string_test(str.endswith)),
    "INDEX_OF": (2, 2, _index_of),
    "LOWER": (1, 1, _on_string(str.lower)),
    "UPPER": (1, 1, _on_string(str.upper)),
    "LENGTH": (1, 1, _on_string(len)),
    "TRIM": (1, 1, _on_string(str.strip)),
    "LTRIM": (1, 1, _on_string(str.lstrip)),
    "RTRIM": (1, 1, _on_string(str.rstrip)),
    "CONCAT": (2, 64, _concat),
    "SUBSTRING": (3, 3, _substring),
    "ABS": (1, 1, _on_number(abs, abs)),
    "FLOOR": (1, 1, _on_number(_identity, lambda x: float(math.floor(x)))),
    "CEILING": (1, 1, _on_number(_identity, lambda x: float(math.ceil(x)))),
    "ROUND": (1, 1, _on_number(_identity, _round_half_away)),
}

# ---------------------------------------------------------------------------------------------------
# Aggregates: each reduces the argument's values over the matching documents.
# ---------------------------------------------------------------------------------------------------


def _agg_count(values: list[Any]) -> Any:
    return sum(1 for v in values if v is not UNDEFINED)


def _finite(compute: Callable[[], Any]) -> Any:
    try:
        result = compute()
    except OverflowError:
        return UNDEFINED
    return UNDEFINED if type(result) is float and not math.isfinite(result) else result


def _agg_sum(values: list[Any]) -> Any:
    return _finite(lambda: sum(v for v in values if _is_num(v)))


def _agg_avg(values: list[Any]) -> Any:
    numbers = [v for v in values if _is_num(v)]
    return _finite(lambda: _divide(sum(numbers), len(numbers))) if numbers else UNDEFINED


def _extreme(pick_later: Callable[[Any, Any], bool]) -> Callable[[list[Any]], Any]:
    """MIN/MAX in Cosmos cross-type order; arrays and objects make the result undefined."""

    def reduce(values: list[Any]) -> Any:
        best: Any = UNDEFINED
        best_key: Any = None
        for value in values:
            kind = _kind(value)
            if kind == _U:
                continue
            if kind >= _ARRAY:
                return UNDEFINED
            key = _order_key(value)
            if best is UNDEFINED or pick_later(key, best_key):
                best, best_key = value, key
        return best

    return reduce


_AGGREGATES: dict[str, Callable[[list[Any]], Any]] = {
    "COUNT": _agg_count,
    "SUM": _agg_sum,
    "AVG": _agg_avg,
    "MIN": _extreme(operator.lt),
    "MAX": _extreme(operator.gt),
}

# ---------------------------------------------------------------------------------------------------
# Parsing: text -> tuple AST, validated and cached
# ---------------------------------------------------------------------------------------------------
# AST nodes: ("const", v) ("param", "@n") ("ident", name) ("prop", base, name) ("index", base, expr)
# ("op", op, left, right) ("and", operands) ("or", operands) ("not", x) ("neg", x) ("pos", x)
# ("in", x, items, negated) ("between", x, low, high, negated) ("cond", test, then, else)
# ("array", items) ("object", ((key, expr), ...)) ("call", NAME, args) ("agg", NAME, arg)

_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)


def _unescape(body: str) -> str:
    """Decode a string literal's escapes (JSON's set plus ``\\'``), joining UTF-16 surrogate pairs."""
    if "\\" not in body:
        return body

    def replace(m: re.Match[str]) -> str:
        escape = m.group(1)
        if len(escape) == 5:
            return chr(int(escape[1:], 16))
        if escape in _ESCAPES:
            return _ESCAPES[escape]
        raise QueryError(f"invalid escape sequence '\\{escape}' in string literal")

    text = _ESCAPE_RE.sub(replace, body)
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        raise QueryError("invalid \\u escape in string literal: unpaired surrogate") from None


def _number(token: str) -> int | float:
    """Integer literals stay exact ``int``s of any size; others become floats, which must be finite."""
    try:
        value: int | float = int(token) if token.isdigit() else float(token)
    except ValueError:
        raise QueryError(f"number literal {token[:40]} is too long") from None
    if type(value) is float and not math.isfinite(value):
        raise QueryError(f"number literal {token} is out of range")
    return value


def _count(token: Token, clause: str) -> int | str:
    """TOP/OFFSET/LIMIT operand: a non-negative integer literal or a parameter name."""
    if token.type == "PARAM":
        return str(token)
    if not token.isdigit():
        raise QueryError(f"{clause} expects a non-negative integer, got {token}")
    return int(token)


def _unsupported(what: str) -> QueryError:
    return QueryError(f"unsupported: {what}")


def _flatten(tag: str, node: Node) -> tuple[Node, ...]:
    """``a AND (b AND c)`` becomes one n-ary node so evaluation is a loop, not a deep call chain."""
    return node[1] if node[0] == tag else (node,)


def _expressions(children: list[Any]) -> list[Any]:
    return [c for c in children if not isinstance(c, Token)]


def _negated(children: list[Any]) -> bool:
    return any(isinstance(c, Token) and c.type == "NOT" for c in children)


class _AstBuilder(Transformer):
    """Runs inside the LALR parser (no parse tree is built) and produces the tuple AST.

    Clauses become tagged tuples that :func:`_build_query` assembles; it runs only for the outermost
    query, so a subquery is reported as such rather than by whatever its own clauses lack.
    """

    def start(self, c: list[Any]) -> _Query:
        return _build_query(c[0])

    def query(self, c: list[Any]) -> list[Any]:
        return c

    def select_clause(self, c: list[Any]) -> Node:
        distinct = any(isinstance(x, Token) and x.type == "DISTINCT" for x in c)
        top = next((x[1] for x in c if isinstance(x, tuple) and x[0] == "top"), None)
        return ("select", distinct, top, c[-1])

    def top_spec(self, c: list[Any]) -> Node:
        return ("top", _count(c[1], "TOP"))

    def select_star(self, c: list[Any]) -> Node:
        return ("star",)

    def select_value(self, c: list[Any]) -> Node:
        return ("value", c[1])

    def select_list(self, c: list[Any]) -> Node:
        return ("list", tuple(c))

    def select_item(self, c: list[Any]) -> tuple[Node, str | None]:
        return c[0], (str(c[2]) if len(c) == 3 else None)

    # FROM and GROUP BY problems are returned, not raised, and raised by _build_query only for the
    # outermost query: `EXISTS(SELECT VALUE t FROM t IN c.tags)` is then reported as EXISTS.

    def from_clause(self, c: list[Any]) -> Node:
        return ("from", c[1])

    def from_alias(self, c: list[Any]) -> str | QueryError:
        source = c[0]
        if not isinstance(source, tuple):
            return source
        name, has_path = source
        if has_path:
            return _unsupported(f"FROM over a document path ({name}...); use FROM {name} and a WHERE clause")
        return str(c[-1]) if len(c) > 1 else name

    def from_path(self, c: list[Any]) -> tuple[str, bool]:
        return str(c[0]), len(c) > 1

    def from_iteration(self, c: list[Any]) -> QueryError:
        return _unsupported("iterating an array in FROM (FROM x IN ...)")

    def from_join(self, c: list[Any]) -> QueryError:
        return _unsupported("JOIN")

    def from_subquery(self, c: list[Any]) -> QueryError:
        return _unsupported("subquery in FROM")

    def where_clause(self, c: list[Any]) -> Node:
        return ("where", c[1])

    def group_by_clause(self, c: list[Any]) -> Node:
        return ("group_by",)

    def order_by_clause(self, c: list[Any]) -> Node:
        return ("order", tuple(c[2:]))

    def order_item(self, c: list[Any]) -> tuple[Node, bool]:
        return c[0], (len(c) == 2 and c[1].type == "DESC")

    def offset_limit_clause(self, c: list[Any]) -> Node:
        return ("offset_limit", _count(c[1], "OFFSET"), _count(c[3], "LIMIT"))

    def conditional(self, c: list[Any]) -> Node:
        return ("cond", c[0], c[1], c[2])

    def coalesce(self, c: list[Any]) -> Node:
        return ("op", "??", c[0], c[1])

    def or_(self, c: list[Any]) -> Node:
        return ("or", _flatten("or", c[0]) + _flatten("or", c[2]))

    def and_(self, c: list[Any]) -> Node:
        return ("and", _flatten("and", c[0]) + _flatten("and", c[2]))

    def in_(self, c: list[Any]) -> Node:
        x, items = _expressions(c)
        return ("in", x, items, _negated(c))

    def in_subquery(self, c: list[Any]) -> None:
        raise _unsupported("subquery in IN (...)")

    def between(self, c: list[Any]) -> Node:
        x, low, high = _expressions(c)
        return ("between", x, low, high, _negated(c))

    def like(self, c: list[Any]) -> None:
        raise _unsupported("LIKE")

    def concat(self, c: list[Any]) -> Node:
        return ("op", "||", c[0], c[1])

    def bitwise_or(self, c: list[Any]) -> None:
        raise _unsupported("bitwise operator '|'")

    def bitwise_xor(self, c: list[Any]) -> None:
        raise _unsupported("bitwise operator '^'")

    def bitwise_and(self, c: list[Any]) -> None:
        raise _unsupported("bitwise operator '&'")

    def bitwise_not(self, c: list[Any]) -> None:
        raise _unsupported("bitwise operator '~'")

    def binary(self, c: list[Any]) -> Node:
        return ("op", "!=" if c[1] == "<>" else c[1], c[0], c[2])

    def eq_op(self, c: list[Token]) -> str:
        return str(c[0])

    rel_op = add_op = mul_op = eq_op

    def sign(self, c: list[Any]) -> Node:
        return ("neg" if c[0] == "-" else "pos", c[1])

    def not_(self, c: list[Any]) -> Node:
        return ("not", c[1])

    def member(self, c: list[Any]) -> Node:
        return ("prop", c[0], str(c[1]))

    def method_call(self, c: list[Any]) -> None:
        if c[0] == ("ident", "udf"):
            raise _unsupported(f"user-defined function udf.{c[1]}")
        raise _unsupported(f"method call .{c[1]}(...)")

    def indexer(self, c: list[Any]) -> Node:
        return ("index", c[0], c[1])

    def ident(self, c: list[Token]) -> Node:
        return ("ident", str(c[0]))

    def param(self, c: list[Token]) -> Node:
        return ("param", str(c[0]))

    def string(self, c: list[Token]) -> Node:
        return ("const", _unescape(c[0][1:-1]))

    def number(self, c: list[Token]) -> Node:
        return ("const", _number(c[0]))

    def true(self, c: list[Token]) -> Node:
        return ("const", True)

    def false(self, c: list[Token]) -> Node:
        return ("const", False)

    def null(self, c: list[Token]) -> Node:
        return ("const", None)

    def array(self, c: list[Any]) -> Node:
        return ("array", c[0] or ())

    def object(self, c: list[Any]) -> Node:
        properties = tuple(p for p in c if p is not None)
        keys = [k for k, _ in properties]
        duplicate = next((k for k in keys if keys.count(k) > 1), None)
        if duplicate is not None:
            raise QueryError(f"duplicate property {duplicate!r} in object literal")
        return ("object", properties)

    def object_property(self, c: list[Any]) -> tuple[str, Node]:
        return _unescape(c[0][1:-1]), c[1]

    def subquery(self, c: list[Any]) -> None:
        raise _unsupported("subquery")

    def subquery_call(self, c: list[Any]) -> None:
        raise _unsupported(f"{str(c[0]).upper()}(subquery)")

    def call(self, c: list[Any]) -> Node:
        name = str(c[0]).upper()
        args: tuple[Node, ...] = c[1] or ()
        if name in _AGGREGATES:
            if len(args) != 1:
                raise QueryError(f"aggregate {name} takes exactly 1 argument, got {len(args)}")
            return ("agg", name, args[0])
        if name not in _FUNCTIONS:
            if name.startswith("ST_"):
                raise _unsupported(f"spatial function {name} (this emulator has no geospatial support)")
            raise QueryError(f"unsupported function: {name}")
        low, high, _ = _FUNCTIONS[name]
        if not low <= len(args) <= high:
            expected = (str(low) if low == high else f"{low} to {high}") + (" argument" if high == 1 else " arguments")
            raise QueryError(f"function {name} takes {expected}, got {len(args)}")
        return ("call", name, args)

    def expr_list(self, c: list[Any]) -> tuple[Node, ...]:
        return tuple(c)


@dataclass(frozen=True, slots=True)
class _Query:
    """A parsed, validated query; immutable because the parse cache shares it between requests."""

    select: str  # "star" | "value" | "list"
    value: Node | None
    items: tuple[tuple[str, Node], ...]
    distinct: bool
    top: int | str | None  # int literal or parameter name
    offset: int | str | None
    limit: int | str | None
    where: Node | None
    order: tuple[tuple[Node, bool], ...]  # (expression, descending)
    aggregate: bool
    params: frozenset[str]
    alias: str = "root"  # the FROM alias, which rewritten queries (query plans) must reuse


def _children(node: Node) -> tuple[Node, ...]:
    tag = node[0]
    if tag in ("const", "param", "ident"):
        return ()
    if tag in ("prop", "not", "neg", "pos"):
        return (node[1],)
    if tag == "index":
        return (node[1], node[2])
    if tag == "op":
        return (node[2], node[3])
    if tag in ("and", "or", "array"):
        return tuple(node[1])
    if tag == "call":
        return tuple(node[2])
    if tag == "agg":
        return (node[2],)
    if tag == "in":
        return (node[1], *node[2])
    if tag in ("between", "cond"):
        return tuple(node[1:4])
    if tag == "object":
        return tuple(e for _, e in node[1])
    raise AssertionError(f"unknown AST node {tag}")


def _has_aggregate(node: Node) -> bool:
    return node[0] == "agg" or any(map(_has_aggregate, _children(node)))


class _Validator:
    """Resolves identifiers against the FROM alias, checks aggregate placement, collects parameters."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.params: set[str] = set()

    def check(self, node: Node, clause: str, aggregate_select: bool = False, in_aggregate: bool = False) -> None:
        tag = node[0]
        if tag == "ident":
            if node[1] != self.alias:
                raise QueryError(f"identifier '{node[1]}' could not be resolved (the FROM alias is '{self.alias}')")
            if aggregate_select and not in_aggregate:
                raise _unsupported(
                    "mixing aggregates with non-aggregated document values in SELECT (GROUP BY is not supported)"
                )
        elif tag == "param":
            self.params.add(node[1])
        elif tag == "agg":
            if clause != "SELECT":
                raise QueryError(f"aggregate {node[1]} is not allowed in {clause}")
            if in_aggregate:
                raise _unsupported(f"aggregate {node[1]} nested inside another aggregate")
            in_aggregate = True
        for child in _children(node):
            self.check(child, clause, aggregate_select, in_aggregate)


def _projection_name(node: Node) -> str | None:
    """Cosmos names an unaliased projection after its last property, or leaves it to ``$n``."""
    if node[0] == "prop":
        return str(node[2])
    if node[0] == "ident":
        return str(node[1])
    if node[0] == "index" and node[2][0] == "const" and type(node[2][1]) is str:
        return str(node[2][1])
    return None


def _build_query(clauses: list[Any]) -> _Query:
    parts = {clause[0]: clause for clause in clauses}
    if "from" not in parts:
        raise _unsupported("a query without FROM")
    source = parts["from"][1]
    if isinstance(source, QueryError):
        raise source
    if "group_by" in parts:
        raise _unsupported("GROUP BY")
    validator = _Validator(source)
    _, distinct, top, selection = parts["select"]

    value: Node | None = None
    items: list[tuple[str, Node]] = []
    expressions: list[Node] = []
    if selection[0] == "value":
        value = selection[1]
        expressions.append(selection[1])
    elif selection[0] == "list":
        unnamed = 0
        for expr, alias in selection[1]:
            name = alias or _projection_name(expr)
            if name is None:
                unnamed += 1
                name = f"${unnamed}"
            if any(name == existing for existing, _ in items):
                raise QueryError(f"duplicate output property '{name}' in SELECT; give one of them an alias with AS")
            items.append((name, expr))
            expressions.append(expr)

    aggregate = any(map(_has_aggregate, expressions))
    for expr in expressions:
        validator.check(expr, "SELECT", aggregate_select=aggregate)
    where = parts["where"][1] if "where" in parts else None
    if where is not None:
        validator.check(where, "WHERE")
    order: tuple[tuple[Node, bool], ...] = parts["order"][1] if "order" in parts else ()
    # ORDER BY beside aggregates is accepted and has no effect: the aggregate yields one row.
    for expr, _ in order:
        validator.check(expr, "ORDER BY")
    offset, limit = parts["offset_limit"][1:] if "offset_limit" in parts else (None, None)
    validator.params.update(p for p in (top, offset, limit) if isinstance(p, str))

    return _Query(
        select=selection[0], value=value, items=tuple(items), distinct=distinct, top=top,
        offset=offset, limit=limit, where=where, order=order, aggregate=aggregate,
        params=frozenset(validator.params), alias=source,
    )


@functools.cache
def _parser() -> Lark:
    """Built on first use: constructing the LALR tables costs tens of milliseconds."""
    grammar = Path(__file__).with_name("cosmos_sql.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", transformer=_AstBuilder(), maybe_placeholders=True)


@functools.lru_cache(maxsize=1024)
def _parse(text: str) -> _Query:
    """Parse and validate once per query text: the SDK resends the same text for every page."""
    try:
        query: _Query = _parser().parse(text)  # type: ignore[assignment]  # the transformer's result
    except UnexpectedCharacters as e:
        raise QueryError(f"syntax error at line {e.line} col {e.column}: unexpected character {e.char!r}") from None
    except UnexpectedToken as e:
        if e.token.type == "$END":
            raise QueryError("syntax error: unexpected end of query") from None
        raise QueryError(f"syntax error at line {e.line} col {e.column}: unexpected '{e.token}'") from None
    except UnexpectedEOF:
        raise QueryError("syntax error: unexpected end of query") from None
    return query


# ---------------------------------------------------------------------------------------------------
# Compilation: AST + parameter values -> closures
# ---------------------------------------------------------------------------------------------------


class _Const:
    """A compile-time constant, kept apart from closures so parents can fold and specialise on it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_NO_LITERAL = object()


def _function(c: Fn | _Const) -> Fn:
    if isinstance(c, _Const):
        value = c.value
        return lambda d: value
    return c


def _getter(steps: list[Any]) -> Fn | _Const:
    """A property path from the document root as one closure, unrolled for the common short paths.

    The root itself is not type-checked: documents are always JSON objects.
    """
    if any(type(s) is not str and type(s) is not int for s in steps):
        return _Const(UNDEFINED)  # c[true], c[1.5], c[null]: never a property
    if not steps:
        return _identity
    if len(steps) == 1 and type(steps[0]) is str:
        key = steps[0]
        return lambda d: d.get(key, UNDEFINED)
    if len(steps) == 2 and type(steps[0]) is str and type(steps[1]) is str:
        k1, k2 = steps

        def get2(d: Any) -> Any:
            v = d.get(k1, UNDEFINED)
            return v.get(k2, UNDEFINED) if type(v) is dict else UNDEFINED

        return get2

    def get(d: Any) -> Any:
        v = d
        for step in steps:
            if type(step) is str:
                if type(v) is not dict:
                    return UNDEFINED
                v = v.get(step, UNDEFINED)
            elif type(v) is list and 0 <= step < len(v):
                v = v[step]
            else:
                return UNDEFINED
        return v

    return get


def _index(base: Any, key: Any) -> Any:
    if type(key) is str:
        return base.get(key, UNDEFINED) if type(base) is dict else UNDEFINED
    if type(key) is int and type(base) is list and 0 <= key < len(base):
        return base[key]
    return UNDEFINED


def _or_function(operands: list[Fn]) -> Fn:
    def or_(d: Any) -> Any:
        result: Any = False
        for f in operands:
            v = f(d)
            if v is True:
                return True
            if v is not False:
                result = UNDEFINED
        return result

    return or_


def _and_function(operands: list[Fn]) -> Fn:
    if len(operands) == 2:
        first, second = operands

        def and2(d: Any) -> Any:
            a = first(d)
            if a is False:
                return False
            b = second(d)
            if b is False:
                return False
            return True if a is True and b is True else UNDEFINED

        return and2
    return lambda d: _and(f(d) for f in operands)


def _compare_to_constant(get: Fn, op: str, constant: Any) -> Fn | None:
    """``path <op> literal`` specialised on the literal's type: the hot shape of WHERE clauses."""
    kind = _kind(constant)
    if op == "=" or op == "!=":
        equal = op == "="
        if kind == _STR:
            if equal:
                return lambda d: (v == constant) if type(v := get(d)) is str else UNDEFINED
            return lambda d: (v != constant) if type(v := get(d)) is str else UNDEFINED
        if kind == _NUM:
            if equal:
                return lambda d: (v == constant) if ((t := type(v := get(d))) is int or t is float) else UNDEFINED
            return lambda d: (v != constant) if ((t := type(v := get(d))) is int or t is float) else UNDEFINED
        if kind == _BOOL:
            return lambda d: ((v is constant) is equal) if type(v := get(d)) is bool else UNDEFINED
        if kind == _NULL:
            return lambda d: equal if get(d) is None else UNDEFINED
        return None
    compare = _RELATIONAL_OPS[op]
    if kind == _STR:
        return lambda d: compare(v, constant) if type(v := get(d)) is str else UNDEFINED
    if kind == _NUM:
        return lambda d: compare(v, constant) if ((t := type(v := get(d))) is int or t is float) else UNDEFINED
    return None


class _Compiler:
    """Turns AST nodes into closures ``f(doc) -> value``, folding constants and parameters.

    In an aggregate SELECT, each aggregate's argument is compiled against documents and recorded in
    :attr:`aggregates`; the surrounding expression is compiled against the row of aggregate results
    (validation guarantees it references nothing else).
    """

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.aggregates: list[tuple[Callable[[list[Any]], Any], Fn]] = []

    def fn(self, node: Node) -> Fn:
        return _function(self.compile(node))

    def compile(self, node: Node) -> Fn | _Const:
        compiled: Fn | _Const = getattr(self, "_c_" + node[0])(node)
        return compiled

    def _literal(self, node: Node) -> Any:
        if node[0] == "const":
            return node[1]
        if node[0] == "param":
            return self.params[node[1]]
        return _NO_LITERAL

    def _path(self, node: Node) -> list[Any] | None:
        """Steps of a root-anchored path whose keys are all literals, else None."""
        tag = node[0]
        if tag == "ident":
            return []
        if tag == "prop" or tag == "index":
            base = self._path(node[1])
            key = node[2] if tag == "prop" else self._literal(node[2])
            return None if base is None or key is _NO_LITERAL else [*base, key]
        return None

    def _c_const(self, node: Node) -> Fn | _Const:
        return _Const(node[1])

    def _c_param(self, node: Node) -> Fn | _Const:
        return _Const(self.params[node[1]])

    def _c_ident(self, node: Node) -> Fn | _Const:
        return _identity

    def _c_prop(self, node: Node) -> Fn | _Const:
        steps = self._path(node)
        if steps is not None:
            return _getter(steps)
        return self._dynamic_index(self.compile(node[1]), _Const(node[2]))

    def _c_index(self, node: Node) -> Fn | _Const:
        steps = self._path(node)
        if steps is not None:
            return _getter(steps)
        return self._dynamic_index(self.compile(node[1]), self.compile(node[2]))

    @staticmethod
    def _dynamic_index(base: Fn | _Const, key: Fn | _Const) -> Fn | _Const:
        if isinstance(base, _Const) and isinstance(key, _Const):
            return _Const(_index(base.value, key.value))
        b, k = _function(base), _function(key)
        return lambda d: _index(b(d), k(d))

    def _c_op(self, node: Node) -> Fn | _Const:
        op = node[1]
        left, right = self.compile(node[2]), self.compile(node[3])
        if op == "??":
            if isinstance(left, _Const):
                return right if left.value is UNDEFINED else left
            r = _function(right)
            return lambda d: v if (v := left(d)) is not UNDEFINED else r(d)
        apply = _BINARY[op]
        fast: Fn | None = None
        if isinstance(right, _Const):
            if isinstance(left, _Const):
                return _Const(apply(left.value, right.value))
            if op in _SWAPPED:
                fast = _compare_to_constant(left, op, right.value)
        elif isinstance(left, _Const) and op in _SWAPPED:
            fast = _compare_to_constant(right, _SWAPPED[op], left.value)
        if fast is not None:
            return fast
        lf, rf = _function(left), _function(right)
        return lambda d: apply(lf(d), rf(d))

    def _c_and(self, node: Node) -> Fn | _Const:
        operands = [self.compile(n) for n in node[1]]
        constants = [c.value for c in operands if isinstance(c, _Const)]
        if any(v is False for v in constants):
            return _Const(False)
        if len(constants) == len(operands):
            return _Const(_and(constants))
        return _and_function([_function(c) for c in operands])

    def _c_or(self, node: Node) -> Fn | _Const:
        operands = [self.compile(n) for n in node[1]]
        constants = [c.value for c in operands if isinstance(c, _Const)]
        if any(v is True for v in constants):
            return _Const(True)
        if len(constants) == len(operands):
            return _Const(_or(constants))
        functions = [_function(c) for c in operands]
        return self._indexed_or(node[1], functions) or _or_function(functions)

    def _anchor(self, node: Node) -> tuple[tuple[Any, ...], str] | None:
        """``path = 'literal'`` inside an OR operand, the key that lets :meth:`_indexed_or` skip it."""
        candidates = node[1] if node[0] == "and" else (node,)
        for n in candidates:
            if n[0] == "op" and n[1] == "=":
                for side, other in ((n[2], n[3]), (n[3], n[2])):
                    steps, value = self._path(side), self._literal(other)
                    if steps is not None and type(value) is str:
                        return tuple(steps), value
        return None

    def _indexed_or(self, operands: tuple[Node, ...], functions: list[Fn]) -> Fn | None:
        """OR of ``(c.id = @idN AND ...)`` terms, as read_items() sends: look the term up by id.

        When the document's value at the shared path is a string, every term anchored on another
        value is false, so only the matching terms decide between true, false and undefined.
        Otherwise the plain OR runs, so the result is always exactly the plain OR's.
        """
        anchors = [self._anchor(n) for n in operands]
        path = anchors[0][0] if anchors[0] else None
        if path is None or any(a is None or a[0] != path for a in anchors):
            return None
        by_value: dict[str, list[Fn]] = {}
        for anchor, f in zip(anchors, functions, strict=True):
            assert anchor is not None
            by_value.setdefault(anchor[1], []).append(f)
        get, plain = _function(_getter(list(path))), _or_function(functions)

        def indexed_or(d: Any) -> Any:
            key = get(d)
            if type(key) is not str:
                return plain(d)
            result: Any = False
            for f in by_value.get(key, ()):
                v = f(d)
                if v is True:
                    return True
                if v is not False:
                    result = UNDEFINED
            return result

        return indexed_or

    def _c_not(self, node: Node) -> Fn | _Const:
        x = self.compile(node[1])
        if isinstance(x, _Const):
            return _Const(_not(x.value))
        return lambda d: _not(x(d))

    def _c_neg(self, node: Node) -> Fn | _Const:
        return self._unary(node, lambda v: -v if _is_num(v) else UNDEFINED)

    def _c_pos(self, node: Node) -> Fn | _Const:
        return self._unary(node, lambda v: v if _is_num(v) else UNDEFINED)

    def _unary(self, node: Node, apply: Callable[[Any], Any]) -> Fn | _Const:
        x = self.compile(node[1])
        if isinstance(x, _Const):
            return _Const(apply(x.value))
        return lambda d: apply(x(d))

    def _c_in(self, node: Node) -> Fn | _Const:
        x = self.compile(node[1])
        items = [self.compile(n) for n in node[2]]
        negated: bool = node[3]
        result = self._in_constants(x, items) if all(isinstance(i, _Const) for i in items) else None
        if result is None:
            xf, fs = _function(x), [_function(i) for i in items]

            def in_(d: Any) -> Any:
                v = xf(d)
                return _or(_eq(v, f(d)) for f in fs)

            result = in_
        if isinstance(result, _Const):
            return _Const(_not(result.value)) if negated else result
        positive = result
        return (lambda d: _not(positive(d))) if negated else positive

    @staticmethod
    def _in_constants(x: Fn | _Const, items: list[Any]) -> Fn | _Const | None:
        """``x IN (literals of one primitive type)`` as a set lookup; exactly the OR of equalities."""
        values = [i.value for i in items]
        if isinstance(x, _Const):
            return _Const(_or(_eq(x.value, v) for v in values))
        kinds = {_kind(v) for v in values}
        if kinds == {_STR}:
            strings = frozenset(values)
            return lambda d: (v in strings) if type(v := x(d)) is str else UNDEFINED
        if kinds == {_NUM}:
            numbers = frozenset(values)
            return lambda d: (v in numbers) if ((t := type(v := x(d))) is int or t is float) else UNDEFINED
        return None

    def _c_between(self, node: Node) -> Fn | _Const:
        ge, le = _BINARY[">="], _BINARY["<="]
        x, low, high = (self.compile(n) for n in node[1:4])
        negated: bool = node[4]

        def between(v: Any, lo: Any, hi: Any) -> Any:
            inside = _and((ge(v, lo), le(v, hi)))
            return _not(inside) if negated else inside

        if isinstance(x, _Const) and isinstance(low, _Const) and isinstance(high, _Const):
            return _Const(between(x.value, low.value, high.value))
        xf, lf, hf = _function(x), _function(low), _function(high)
        return lambda d: between(xf(d), lf(d), hf(d))

    def _c_cond(self, node: Node) -> Fn | _Const:
        test, then, otherwise = (self.compile(n) for n in node[1:4])
        if isinstance(test, _Const):
            return then if test.value is True else otherwise
        tf, ef = _function(then), _function(otherwise)
        return lambda d: tf(d) if test(d) is True else ef(d)

    def _c_array(self, node: Node) -> Fn | _Const:
        items = [self.compile(n) for n in node[1]]
        if all(isinstance(i, _Const) for i in items):
            return _Const([v for i in items if (v := i.value) is not UNDEFINED])  # type: ignore[union-attr]
        fs = [_function(i) for i in items]
        return lambda d: [v for f in fs if (v := f(d)) is not UNDEFINED]

    def _c_object(self, node: Node) -> Fn | _Const:
        return _object_builder([(key, self.compile(n)) for key, n in node[1]])

    def _c_call(self, node: Node) -> Fn | _Const:
        implementation = _FUNCTIONS[node[1]][2]
        args = [self.compile(n) for n in node[2]]
        if all(isinstance(a, _Const) for a in args):
            return _Const(implementation(*(a.value for a in args)))  # type: ignore[union-attr]
        fs = [_function(a) for a in args]
        if len(fs) == 1:
            (f,) = fs
            return lambda d: implementation(f(d))
        if len(fs) == 2:
            f1, f2 = fs
            return lambda d: implementation(f1(d), f2(d))
        return lambda d: implementation(*[f(d) for f in fs])

    def _c_agg(self, node: Node) -> Fn | _Const:
        slot = len(self.aggregates)
        self.aggregates.append((_AGGREGATES[node[1]], self.fn(node[2])))
        return lambda row: row[slot]


def _object_builder(properties: list[tuple[str, Fn | _Const]]) -> Fn | _Const:
    """An object whose undefined properties are left out, as Cosmos does for projections and literals."""
    if all(isinstance(c, _Const) for _, c in properties):
        return _Const({k: c.value for k, c in properties if c.value is not UNDEFINED})  # type: ignore[union-attr]
    fs = [(k, _function(c)) for k, c in properties]
    return lambda d: {k: v for k, f in fs if (v := f(d)) is not UNDEFINED}


def _distinct(values: Iterable[Any]) -> Iterator[Any]:
    seen: set[tuple[Any, ...]] = set()
    for value in values:
        key = _order_key(value)
        if key not in seen:
            seen.add(key)
            yield value


class CompiledQuery:
    """A query with its parameters bound, ready to evaluate documents."""

    streamable: bool
    """True when results can be produced one document at a time in storage order (no ORDER BY,
    aggregate, DISTINCT, TOP or OFFSET/LIMIT), so the server may page with its own continuation."""

    def __init__(self, query: _Query, params: dict[str, Any]) -> None:
        self.parsed = query  # the validated AST and the bound parameters, for query plans
        self.params = params
        compiler = _Compiler(params)
        where = compiler.compile(query.where) if query.where is not None else _Const(True)
        self._matches_nothing = isinstance(where, _Const) and where.value is not True
        self._where: Fn | None = None if isinstance(where, _Const) else where
        self._order = [(compiler.fn(expr), descending) for expr, descending in query.order]
        self._project: Fn | None = None  # None: SELECT *, the document itself
        if query.select == "value":
            assert query.value is not None
            self._project = compiler.fn(query.value)
        elif query.select == "list":
            self._project = _function(_object_builder([(name, compiler.compile(e)) for name, e in query.items]))
        self._aggregates = compiler.aggregates
        self._is_aggregate = query.aggregate
        self._distinct = query.distinct
        self._offset = bound_count(query.offset, params, "OFFSET") or 0
        top, limit = bound_count(query.top, params, "TOP"), bound_count(query.limit, params, "LIMIT")
        counts = [n for n in (top, limit) if n is not None]
        self._count: int | None = min(counts) if counts else None
        self.streamable = not (query.order or query.aggregate or query.distinct) and not (
            query.top is not None or query.offset is not None
        )

    def evaluate_one(self, doc: dict[str, Any]) -> tuple[bool, Any]:
        """(matched WHERE?, projected result) for one document of a non-aggregate query.

        A document whose ``SELECT VALUE`` is undefined yields no row in Cosmos DB, so it reports
        ``(False, None)`` like a document the WHERE clause rejected.
        """
        if self._is_aggregate:
            raise TypeError("evaluate_one() cannot evaluate an aggregate query; use run()")
        if self._matches_nothing or (self._where is not None and self._where(doc) is not True):
            return False, None
        if self._project is None:
            return True, doc
        value = self._project(doc)
        return (False, None) if value is UNDEFINED else (True, value)

    def run(self, docs: Iterable[dict[str, Any]]) -> list[Any]:
        """All results in Cosmos order: WHERE, ORDER BY, projection, DISTINCT, OFFSET/LIMIT and TOP.

        Deterministic: ties in ORDER BY keep the input order. Without ORDER BY, evaluation stops as
        soon as TOP/LIMIT is satisfied.
        """
        where = self._where
        matched: Iterable[dict[str, Any]] = (
            () if self._matches_nothing else docs if where is None else (d for d in docs if where(d) is True)
        )
        if self._is_aggregate:
            rows = list(matched)
            totals = [reduce([arg(d) for d in rows]) for reduce, arg in self._aggregates]
            assert self._project is not None
            results: Iterable[Any] = (self._project(totals),)
        else:
            if self._order:
                matched = self._sorted(matched)
            project = self._project
            results = matched if project is None else map(project, matched)
        results = (r for r in results if r is not UNDEFINED)
        if self._distinct:
            results = _distinct(results)
        stop = None if self._count is None else self._offset + self._count
        return list(islice(results, self._offset, stop))

    def _sorted(self, docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stable sort on Cosmos-ordered keys; mixed ASC/DESC becomes one stable pass per key."""
        order = self._order
        rows: list[tuple[Any, ...]] = [(*(_order_key(f(d)) for f, _ in order), d) for d in docs]  # keys..., doc
        directions = {descending for _, descending in order}
        if len(directions) == 1:
            rows.sort(key=operator.itemgetter(*range(len(order))), reverse=directions.pop())
        else:
            for position in reversed(range(len(order))):
                rows.sort(key=operator.itemgetter(position), reverse=order[position][1])
        return [row[-1] for row in rows]


def bound_count(count: int | str | None, params: dict[str, Any], clause: str) -> int | None:
    if not isinstance(count, str):
        return count
    value = params[count]
    if type(value) is not int or value < 0:
        raise QueryError(f"{clause} expects a non-negative integer, but {count} is {value!r}")
    return value


def _bind(query: _Query, parameters: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Parameter values by name; a parameter supplied without a value is undefined, as in Cosmos DB."""
    values: dict[str, Any] = {}
    for parameter in parameters or ():
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str) or not name:
            raise QueryError(f"each parameter must be an object with a string 'name', got {parameter!r}")
        values[name if name.startswith("@") else "@" + name] = parameter.get("value", UNDEFINED)
    missing = sorted(query.params - values.keys())
    if missing:
        raise QueryError(f"parameter {', '.join(missing)} is referenced in the query but not supplied")
    return values


def compile_query(text: str, parameters: list[dict[str, Any]] | None = None) -> CompiledQuery:
    """Parse (cached per text) and bind ``parameters`` (Cosmos form ``[{"name": "@id", "value": ...}]``).

    :raises QueryError: for syntax errors, unsupported constructs and missing parameters.
    """
    if not isinstance(text, str):
        raise QueryError("the query text must be a string")
    query = _parse(text)
    return CompiledQuery(query, _bind(query, parameters))
