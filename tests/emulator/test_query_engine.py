"""The emulator's SQL engine on its own: Cosmos DB query semantics, results and error messages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from asyncmig.emulator import query as query_module
from asyncmig.emulator.query import UNDEFINED, QueryError, compile_query


def params(**values: Any) -> list[dict[str, Any]]:
    return [{"name": f"@{name}", "value": value} for name, value in values.items()]


def rows(text: str, docs: Iterable[Any], **values: Any) -> list[Any]:
    return compile_query(text, params(**values)).run(docs)


def expr(text: str, doc: dict[str, Any] | None = None, **values: Any) -> Any:
    """The value of one scalar expression for ``doc``: UNDEFINED when Cosmos would leave it out."""
    (result,) = rows(f'SELECT VALUE {{"r": {text}}} FROM c', [doc if doc is not None else {}], **values)
    return result.get("r", UNDEFINED)


def ids(text: str, docs: Iterable[Any], **values: Any) -> list[Any]:
    return [d["id"] for d in rows(text, docs, **values)]


def error(text: str, parameters: list[dict[str, Any]] | None = None) -> str:
    with pytest.raises(QueryError) as caught:
        compile_query(text, parameters)
    return str(caught.value)


DOCS: list[dict[str, Any]] = [
    {"id": "a", "pk": "p1", "n": 3, "s": "apple", "tags": ["x", "y"], "o": {"k": 1, "deep": {"v": "A"}}},
    {"id": "b", "pk": "p1", "n": 1.5, "s": "Banana", "flag": True},
    {"id": "c", "pk": "p2", "n": "7", "flag": False, "o": {"k": 2}},
    {"id": "d", "pk": "p2", "n": None, "tags": []},
]


# ---- SELECT / FROM --------------------------------------------------------------------------------


def test_select_star_returns_documents_unchanged_for_any_alias() -> None:
    assert rows("SELECT * FROM c", DOCS) == DOCS
    assert rows("select * from root r where r.id = 'b'", DOCS) == [DOCS[1]]
    assert rows("SeLeCt * FrOm Families AS f WhErE f.id = 'c'", DOCS) == [DOCS[2]]
    assert rows("SELECT * FROM root", DOCS[:1]) == DOCS[:1]


def test_metadata_lookup_by_id_and_resource_link() -> None:
    containers = [{"id": "one", "_self": "dbs/x/colls/1"}, {"id": "two", "resource": "dbs/x/colls/2"}]
    assert rows("SELECT * FROM root r WHERE r.id=@id", containers, id="two") == [containers[1]]
    assert rows("SELECT * FROM root r WHERE r.resource=@link", containers, link="dbs/x/colls/2") == [containers[1]]
    assert rows("SELECT * FROM root r WHERE r.id=@id", containers, id="nope") == []


def test_identifier_other_than_the_alias_is_an_error() -> None:
    assert error("SELECT * FROM root r WHERE root.id = 'a'") == (
        "identifier 'root' could not be resolved (the FROM alias is 'r')"
    )
    assert "'C'" in error("SELECT * FROM c WHERE C.id = 'a'")  # identifiers are case-sensitive


def test_projection_names_follow_cosmos_rules() -> None:
    doc = {"id": "a", "o": {"b": 1}, "x y": 2, "arr": [10, 20]}
    result = rows('SELECT c.id, c.o.b, c["x y"], c["x y"] AS z, c.arr[1], 1 + 1, c FROM c', [doc])
    assert result == [{"id": "a", "b": 1, "x y": 2, "z": 2, "$1": 20, "$2": 2, "c": doc}]


def test_undefined_projected_values_are_omitted() -> None:
    assert rows("SELECT c.id, c.missing, c.o.missing.deeper FROM c", [{"id": "a", "o": {}}]) == [{"id": "a"}]
    assert rows("SELECT c.missing FROM c", [{"id": "a"}]) == [{}]


def test_duplicate_projection_name_is_an_error() -> None:
    assert "duplicate output property 'id'" in error("SELECT c.id, c.o.id FROM c")
    assert rows("SELECT c.id, c.o.id AS oid FROM c", [{"id": "a", "o": {"id": "b"}}]) == [{"id": "a", "oid": "b"}]


def test_select_value_and_constructed_objects_and_arrays() -> None:
    docs = [{"id": "a", "n": 1}, {"id": "b"}]
    assert rows("SELECT VALUE c.n FROM c", docs) == [1]  # undefined VALUE rows vanish
    assert rows('SELECT VALUE {"id": c.id, "n": c.n, "k": "lit"} FROM c', docs) == [
        {"id": "a", "n": 1, "k": "lit"},
        {"id": "b", "k": "lit"},
    ]
    assert rows("SELECT VALUE [c.id, c.n] FROM c", docs) == [["a", 1], ["b"]]
    assert rows("SELECT VALUE 42 FROM c", docs) == [42, 42]
    assert rows('SELECT [{"item": c.n}] AS orderByItems, c AS payload FROM c', docs[:1]) == [
        {"orderByItems": [{"item": 1}], "payload": docs[0]}
    ]


def test_array_indexing_and_dynamic_member_access() -> None:
    doc = {"arr": [1, [2, 3]], "key": "name", "name": "n", "i": 1, "o": {"x": 5}}
    assert expr("c.arr[0]", doc) == 1
    assert expr("c.arr[1][0]", doc) == 2
    assert expr("c.arr[5]", doc) is UNDEFINED
    assert expr("c.arr[-1]", doc) is UNDEFINED
    assert expr("c.arr[c.i]", doc) == [2, 3]
    assert expr("c[c.key]", doc) == "n"
    assert expr("c.o[@k]", doc, k="x") == 5
    assert expr("c.o[0]", doc) is UNDEFINED
    assert expr('c.arr["0"]', doc) is UNDEFINED
    assert expr('{"a": {"b": 7}}.a.b') == 7


def test_keywords_are_allowed_as_property_names_after_a_dot() -> None:
    doc = {"value": 1, "order": 2, "select": 3}
    assert rows("SELECT c.value, c.order, c.select FROM c", [doc]) == [doc]
    assert "unexpected" in error("SELECT value FROM c")


# ---- literals -------------------------------------------------------------------------------------


def test_string_literals_and_escapes() -> None:
    assert expr("'single'") == "single"
    assert expr('"double"') == "double"
    assert expr(r"'it\'s'") == "it's"
    assert expr(r'"say \"hi\" \\ \/ \n\t"') == 'say "hi" \\ / \n\t'
    assert expr(r'"\u00e9\ud83d\ude00"') == "é😀"
    assert "invalid escape sequence '\\q'" in error(r"SELECT VALUE 'a\q' FROM c")
    assert "unpaired surrogate" in error(r"SELECT VALUE '\ud83d' FROM c")


def test_number_literals_keep_integers_exact() -> None:
    big = 2**70
    value = expr(str(big))
    assert value == big and type(value) is int
    assert type(expr("3")) is int
    assert expr("1.5") == 1.5
    assert expr("1e3") == 1000.0
    assert expr(".5") == 0.5
    assert expr("-4") == -4
    assert "out of range" in error("SELECT VALUE 1e999 FROM c")


def test_boolean_and_null_literals_are_lowercase_only() -> None:
    assert expr("true") is True
    assert expr("false") is False
    assert expr("null") is None
    assert "identifier 'TRUE' could not be resolved" in error("SELECT * FROM c WHERE c.f = TRUE")


def test_undefined_is_not_a_literal() -> None:
    assert "identifier 'undefined' could not be resolved" in error("SELECT * FROM c WHERE c.x = undefined")


# ---- comparison semantics -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 = 1.0", True),
        ("1 = 2", False),
        ("'a' = 'a'", True),
        ("null = null", True),
        ("true = true", True),
        ("true = 1", UNDEFINED),  # booleans are not numbers
        ("1 = '1'", UNDEFINED),
        ("null = false", UNDEFINED),
        ("c.missing = c.missing", UNDEFINED),
        ("c.missing = null", UNDEFINED),
        ('{"a": 1, "b": [1, 2]} = {"b": [1, 2], "a": 1.0}', True),
        ('{"a": 1} = {"a": 1, "b": 2}', False),
        ("[true] = [1]", False),  # element types must match inside arrays
        ("[1, [2]] = [1, [2]]", True),
        ("[1] = {}", UNDEFINED),
        ("1 != 2", True),
        ("'a' <> 'a'", False),
        ("1 != 'a'", UNDEFINED),
        ("[1] != [2]", UNDEFINED),  # only = is defined between arrays/objects
        ("{} != {}", UNDEFINED),
        ("1 < 2.5", True),
        ("'B' < 'a'", True),  # ordinal string comparison
        ("'a' < 1", UNDEFINED),
        ("false < true", True),
        ("null <= null", True),
        ("null < null", False),
        ("[1] < [2]", UNDEFINED),
        ("c.missing < 1", UNDEFINED),
        ("2 >= 2", True),
        ("3 > 2", True),
        ("2 <= 1", False),
    ],
)
def test_comparisons(text: str, expected: Any) -> None:
    assert expr(text) is expected


def test_comparison_with_document_values_and_parameters_of_each_type() -> None:
    doc = {"s": "x", "i": 2, "f": 2.0, "b": True, "z": None, "arr": [1], "obj": {"k": [True]}}
    assert expr("c.s = @v", doc, v="x") is True
    assert expr("c.s != @v", doc, v="y") is True
    assert expr("c.s = @v", doc, v=1) is UNDEFINED
    assert expr("c.i = @v", doc, v=2.0) is True
    assert expr("@v = c.f", doc, v=2) is True
    assert expr("c.i != @v", doc, v=3) is True
    assert expr("c.i = @v", doc, v=True) is UNDEFINED
    assert expr("c.b = @v", doc, v=True) is True
    assert expr("c.b != @v", doc, v=True) is False
    assert expr("c.b = @v", doc, v=1) is UNDEFINED
    assert expr("c.z = @v", doc, v=None) is True
    assert expr("c.z != @v", doc, v=None) is False
    assert expr("c.s = @v", doc, v=None) is UNDEFINED
    assert expr("c.arr = @v", doc, v=[1.0]) is True
    assert expr("c.obj = @v", doc, v={"k": [True]}) is True
    assert expr("c.obj = @v", doc, v={"k": [1]}) is False
    assert expr("c.i < @v", doc, v=3) is True
    assert expr("@v < c.i", doc, v=3) is False
    assert expr("c.s >= @v", doc, v="x") is True
    assert expr("c.s > @v", doc, v=1) is UNDEFINED
    assert expr("c.missing = @v", doc, v="x") is UNDEFINED


def test_where_keeps_only_exactly_true() -> None:
    docs = [{"id": "t", "v": True}, {"id": "one", "v": 1}, {"id": "s", "v": "true"}, {"id": "u"}]
    assert ids("SELECT * FROM c WHERE c.v", docs) == ["t"]
    assert ids("SELECT * FROM c WHERE c.v != 'x'", docs) == ["s"]
    assert ids("SELECT * FROM c WHERE c.n = 1", [{"id": "x", "n": 1.0}, {"id": "y", "n": "1"}]) == ["x"]


def test_mixed_type_comparisons_filter_out_documents_both_ways() -> None:
    docs = [{"id": "num", "v": 5}, {"id": "str", "v": "5"}, {"id": "missing"}]
    assert ids("SELECT * FROM c WHERE c.v > 1", docs) == ["num"]
    assert ids("SELECT * FROM c WHERE NOT (c.v > 1)", docs) == []
    assert ids("SELECT * FROM c WHERE c.v != 5", docs) == []


# ---- logic ----------------------------------------------------------------------------------------

LOGIC_DOC = {"t": True, "f": False, "one": 1, "s": "x"}


@pytest.mark.parametrize(
    ("left", "right", "and_result", "or_result"),
    [
        ("c.t", "c.t", True, True),
        ("c.t", "c.f", False, True),
        ("c.f", "c.t", False, True),
        ("c.f", "c.f", False, False),
        ("c.t", "c.missing", UNDEFINED, True),
        ("c.missing", "c.t", UNDEFINED, True),
        ("c.f", "c.missing", False, UNDEFINED),
        ("c.missing", "c.f", False, UNDEFINED),
        ("c.missing", "c.missing", UNDEFINED, UNDEFINED),
        ("c.t", "c.one", UNDEFINED, True),  # non-booleans behave like undefined
        ("c.s", "c.f", False, UNDEFINED),
    ],
)
def test_three_valued_and_or(left: str, right: str, and_result: Any, or_result: Any) -> None:
    assert expr(f"{left} AND {right}", LOGIC_DOC) is and_result
    assert expr(f"{left} OR {right}", LOGIC_DOC) is or_result
    # The same with literals, which the compiler folds into constants.
    literal = {"c.t": "true", "c.f": "false", "c.missing": "@u", "c.one": "1", "c.s": "'x'"}
    folded = f"{literal[left]} AND {literal[right]}", f"{literal[left]} OR {literal[right]}"
    no_value = [{"name": "@u"}]
    assert compile_query(f"SELECT VALUE {{'r': {folded[0]}}} FROM c", no_value).run([{}]) == (
        [{}] if and_result is UNDEFINED else [{"r": and_result}]
    )
    assert compile_query(f"SELECT VALUE {{'r': {folded[1]}}} FROM c", no_value).run([{}]) == (
        [{}] if or_result is UNDEFINED else [{"r": or_result}]
    )


def test_and_or_chains_with_documents() -> None:
    doc = {"a": True, "b": False}
    assert expr("c.a AND c.a AND c.a", doc) is True
    assert expr("c.a AND c.missing AND c.b", doc) is False
    assert expr("c.a AND c.missing AND c.a", doc) is UNDEFINED
    assert expr("c.b OR c.missing OR c.a", doc) is True
    assert expr("c.b OR c.missing OR c.b", doc) is UNDEFINED
    assert expr("c.b OR c.b OR c.b", doc) is False


def test_not() -> None:
    assert expr("NOT true") is False
    assert expr("NOT c.f", {"f": False}) is True
    assert expr("NOT c.missing") is UNDEFINED
    assert expr("NOT 0") is UNDEFINED
    assert expr("not (1 = 2)") is True


def test_not_binds_tighter_than_comparison_as_in_the_cosmos_grammar() -> None:
    # `NOT c.b = false` is `(NOT c.b) = false`, not `NOT (c.b = false)`.
    assert expr("NOT c.b = false", {"b": True}) is True
    assert expr("NOT (c.b = false)", {"b": True}) is True
    assert expr("NOT c.n = 1", {"n": 1}) is UNDEFINED
    assert expr("NOT (c.n = 1)", {"n": 1}) is False


def test_operator_precedence() -> None:
    assert expr("1 + 2 * 3") == 7
    assert expr("(1 + 2) * 3") == 9
    assert expr("10 - 4 - 3") == 3
    assert expr("1 < 2 = true") is True
    assert expr("true OR false AND false") is True
    assert expr("(true OR false) AND false") is False
    assert expr("'a' || 'b' = 'ab'") is UNDEFINED  # || binds loosest: 'a' || ('b' = 'ab')
    assert expr("('a' || 'b') = 'ab'") is True


def test_in() -> None:
    docs = [{"id": "a", "v": 1}, {"id": "b", "v": 2.0}, {"id": "c", "v": "1"}, {"id": "d"}, {"id": "e", "v": True}]
    assert ids("SELECT * FROM c WHERE c.v IN (1, 2)", docs) == ["a", "b"]
    assert ids("SELECT * FROM c WHERE c.v IN ('1', 'x')", docs) == ["c"]
    assert ids("SELECT * FROM c WHERE c.v IN (1, '1', true)", docs) == ["a", "c", "e"]
    assert ids("SELECT * FROM c WHERE c.v NOT IN (1, 3)", docs) == ["b"]
    assert ids("SELECT * FROM c WHERE c.id IN (@a, @b)", docs, a="d", b="a") == ["a", "d"]
    assert ids("SELECT * FROM c WHERE c.v IN (c.w, 2)", docs) == ["b"]
    assert expr("c.v IN (1, 2)", {"v": "x"}) is UNDEFINED
    assert expr("c.v IN ('a')", {"v": "b"}) is False
    assert expr("c.v IN (1, 'a')", {"v": "b"}) is UNDEFINED  # the OR of (undefined, false)
    assert expr("c.v NOT IN ('a')", {"v": "b"}) is True
    assert expr("c.v IN ([1], {\"a\": 1})", {"v": {"a": 1}}) is True
    assert expr("2 IN (1, 2)") is True
    assert expr("c.v IN (1, 2)", {}) is UNDEFINED


def test_between() -> None:
    docs = [{"id": "lo", "v": 1}, {"id": "mid", "v": 2.5}, {"id": "hi", "v": 5}, {"id": "s", "v": "3"}, {"id": "u"}]
    assert ids("SELECT * FROM c WHERE c.v BETWEEN 1 AND 3", docs) == ["lo", "mid"]
    assert ids("SELECT * FROM c WHERE c.v NOT BETWEEN 1 AND 3", docs) == ["hi"]
    assert ids("SELECT * FROM c WHERE c.v BETWEEN 'a' AND 'z' OR c.v BETWEEN '0' AND '9'", docs) == ["s"]
    assert ids("SELECT * FROM c WHERE c.v BETWEEN @lo AND @hi AND c.id != 'lo'", docs, lo=1, hi=5) == ["mid", "hi"]
    assert expr("c.v BETWEEN 1 AND 'z'", {"v": 5}) is UNDEFINED
    assert expr("c.v BETWEEN 6 AND 'z'", {"v": 5}) is False  # false AND undefined
    assert expr("3 BETWEEN 1 + 1 AND 2 * 2") is True


# ---- arithmetic and other operators ---------------------------------------------------------------


def test_arithmetic_keeps_integers_integers() -> None:
    for text, expected in [("2 + 3", 5), ("2 * 3", 6), ("7 - 10", -3), ("6 / 3", 2), ("7 % 3", 1), ("-7 % 3", -1)]:
        value = expr(text)
        assert value == expected and type(value) is int, text
    assert expr("7 / 2") == 3.5
    assert expr("1.5 + 1") == 2.5
    assert expr("7.5 % 2") == 1.5
    assert expr("-7.5 % 2") == -1.5
    big = 2**64
    assert expr(f"{big} * {big} + 1") == big * big + 1


def test_arithmetic_with_invalid_operands_is_undefined() -> None:
    for text in ["1 / 0", "1 % 0", "'a' + 1", "true + 1", "null * 2", "c.missing - 1", "[1] + [2]", "1e308 * 10"]:
        assert expr(text) is UNDEFINED, text
    assert expr("-'a'") is UNDEFINED
    assert expr("+c.n", {"n": 4}) == 4
    assert expr("-c.n", {"n": 4}) == -4


def test_string_concatenation_coalesce_and_conditional() -> None:
    doc = {"a": "x", "z": None, "f": False}
    assert expr("c.a || 'y'", doc) == "xy"
    assert expr("c.a || 1", doc) is UNDEFINED
    assert expr("c.missing ?? 'default'", doc) == "default"
    assert expr("c.z ?? 'default'", doc) is None  # null is defined
    assert expr("c.missing ?? c.other ?? 3", doc) == 3
    assert expr("c.a ?? 'unused'", doc) == "x"
    assert expr("c.f ? 'yes' : 'no'", doc) == "no"
    assert expr("c.a = 'x' ? 'yes' : 'no'", doc) == "yes"
    assert expr("c.missing ? 'yes' : 'no'", doc) == "no"
    assert expr("true ? c.a : c.missing", doc) == "x"


# ---- functions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("IS_DEFINED(c.s)", True),
        ("IS_DEFINED(c.missing)", False),
        ("IS_DEFINED(c.z)", True),
        ("IS_NULL(c.z)", True),
        ("IS_NULL(c.missing)", False),
        ("IS_STRING(c.s)", True),
        ("IS_STRING(c.i)", False),
        ("IS_NUMBER(c.i)", True),
        ("IS_NUMBER(c.f)", True),
        ("IS_NUMBER(c.b)", False),
        ("IS_BOOL(c.b)", True),
        ("IS_BOOL(c.i)", False),
        ("IS_ARRAY(c.arr)", True),
        ("IS_ARRAY(c.obj)", False),
        ("IS_OBJECT(c.obj)", True),
        ("IS_OBJECT(c.z)", False),
        ("IS_PRIMITIVE(c.z)", True),
        ("IS_PRIMITIVE(c.s)", True),
        ("IS_PRIMITIVE(c.arr)", False),
        ("IS_PRIMITIVE(c.missing)", False),
        ("is_defined(c.s)", True),
        ("ARRAY_CONTAINS(c.arr, 2)", True),
        ("ARRAY_CONTAINS(c.arr, 2.0)", True),
        ("ARRAY_CONTAINS(c.arr, '2')", False),
        ("ARRAY_CONTAINS(c.bools, 1)", False),
        ("ARRAY_CONTAINS(c.objs, {\"k\": 1})", False),
        ("ARRAY_CONTAINS(c.objs, {\"k\": 1}, true)", True),
        ("ARRAY_CONTAINS(c.objs, {\"k\": 1, \"j\": 2}, true)", True),
        ("ARRAY_CONTAINS(c.objs, {\"k\": 1, \"j\": 3}, true)", False),
        ("ARRAY_CONTAINS(c.objs, {\"k\": 1, \"j\": 2}, false)", True),
        ("ARRAY_CONTAINS(c.s, 'a')", UNDEFINED),
        ("ARRAY_LENGTH(c.arr)", 3),
        ("ARRAY_LENGTH(c.s)", UNDEFINED),
        ("ARRAY_CONCAT(c.arr, [4], [])", [1, 2, 3, 4]),
        ("ARRAY_CONCAT(c.arr, 'x')", UNDEFINED),
        ("CONTAINS(c.s, 'ell')", True),
        ("CONTAINS(c.s, 'ELL')", False),
        ("CONTAINS(c.s, 'ELL', true)", True),
        ("CONTAINS(c.i, '1')", UNDEFINED),
        ("STARTSWITH(c.s, 'He')", True),
        ("StartsWith(c.s, 'he')", False),
        ("STARTSWITH(c.s, 'he', true)", True),
        ("ENDSWITH(c.s, 'lo')", True),
        ("ENDSWITH(c.s, 'LO', true)", True),
        ("ENDSWITH(c.s, 'x')", False),
        ("INDEX_OF(c.s, 'l')", 2),
        ("INDEX_OF(c.s, 'z')", -1),
        ("LOWER(c.s)", "hello"),
        ("UPPER(c.s)", "HELLO"),
        ("LOWER(c.i)", UNDEFINED),
        ("LENGTH(c.s)", 5),
        ("LENGTH(c.arr)", UNDEFINED),
        ("TRIM('  a b  ')", "a b"),
        ("LTRIM('  a  ')", "a  "),
        ("RTRIM('  a  ')", "  a"),
        ("CONCAT(c.s, '-', 'x')", "Hello-x"),
        ("CONCAT(c.s, 1)", UNDEFINED),
        ("SUBSTRING(c.s, 1, 3)", "ell"),
        ("SUBSTRING(c.s, 3, 100)", "lo"),
        ("SUBSTRING(c.s, 'a', 1)", UNDEFINED),
        ("ABS(-3)", 3),
        ("ABS(-2.5)", 2.5),
        ("ABS('x')", UNDEFINED),
        ("FLOOR(2.7)", 2.0),
        ("FLOOR(-2.5)", -3.0),
        ("FLOOR(7)", 7),
        ("CEILING(2.1)", 3.0),
        ("CEILING(-2.1)", -2.0),
        ("ROUND(2.5)", 3.0),
        ("ROUND(-2.5)", -3.0),
        ("ROUND(2.4)", 2.0),
        ("ROUND(0.49999999999999994)", 0.0),
        ("ROUND(7)", 7),
        ("ROUND(true)", UNDEFINED),
    ],
)
def test_functions(text: str, expected: Any) -> None:
    doc = {
        "s": "Hello", "i": 1, "f": 1.5, "b": True, "z": None, "arr": [1, 2, 3], "obj": {"k": 1},
        "bools": [True], "objs": [{"k": 1, "j": 2}],
    }
    value = expr(text, doc)
    if expected is UNDEFINED or isinstance(expected, bool):
        assert value is expected
    else:
        assert value == expected and type(value) is type(expected)


def test_function_errors_name_the_function() -> None:
    assert error("SELECT * FROM c WHERE ST_DISTANCE(c.loc, @p) < 10") == (
        "unsupported: spatial function ST_DISTANCE (this emulator has no geospatial support)")
    assert error("SELECT VALUE REGEXMATCH(c.s, 'a') FROM c") == "unsupported function: REGEXMATCH"
    assert error("SELECT VALUE LOWER() FROM c") == "function LOWER takes 1 argument, got 0"
    assert error("SELECT VALUE CONTAINS('a') FROM c") == "function CONTAINS takes 2 to 3 arguments, got 1"
    assert error("SELECT VALUE COUNT(1, 2) FROM c") == "aggregate COUNT takes exactly 1 argument, got 2"


# ---- parameters -----------------------------------------------------------------------------------


def test_parameters_bind_anywhere_a_literal_may_appear() -> None:
    docs = [{"id": "a", "n": 1, "arr": ["x"]}, {"id": "b", "n": 2, "arr": ["y"]}]
    assert ids("SELECT * FROM c WHERE c.n > @min AND ARRAY_CONTAINS(c.arr, @tag)", docs, min=0, tag="y") == ["b"]
    assert rows("SELECT VALUE [@p, c.id] FROM c WHERE c.id = 'a'", docs, p={"k": [1]}) == [[{"k": [1]}, "a"]]
    assert rows("SELECT TOP @t VALUE c.id FROM c", docs, t=1) == ["a"]
    assert rows("SELECT VALUE c.id FROM c ORDER BY c.id OFFSET @o LIMIT @l", docs, o=1, l=5) == ["b"]


def test_the_same_text_binds_different_parameters() -> None:
    text = "SELECT VALUE c.id FROM c WHERE c.n = @n"
    docs = [{"id": "a", "n": 1}, {"id": "b", "n": 2}]
    assert compile_query(text, params(n=1)).run(docs) == ["a"]
    assert compile_query(text, params(n=2)).run(docs) == ["b"]


def test_missing_parameter_is_an_error_naming_it() -> None:
    assert error("SELECT * FROM c WHERE c.id = @id") == "parameter @id is referenced in the query but not supplied"
    assert "@b" in error("SELECT * FROM c WHERE c.id IN (@a, @b)", params(a=1))
    assert "@t" in error("SELECT TOP @t * FROM c")


def test_parameter_name_forms_and_values() -> None:
    docs = [{"id": "a"}]
    assert compile_query("SELECT * FROM c WHERE c.id = @id", [{"name": "id", "value": "a"}]).run(docs) == docs
    unused = params(id="a", extra=1)
    assert compile_query("SELECT * FROM c WHERE c.id = @id", unused).run(docs) == docs
    no_value = compile_query("SELECT VALUE {'r': IS_DEFINED(@x)} FROM c", [{"name": "@x"}])
    assert no_value.run(docs) == [{"r": False}]
    assert "string 'name'" in error("SELECT * FROM c", [{"value": 1}])


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, None])
def test_count_parameters_must_be_non_negative_integers(bad: Any) -> None:
    assert error("SELECT TOP @t * FROM c", params(t=bad)).startswith("TOP expects a non-negative integer")
    assert error("SELECT * FROM c OFFSET 0 LIMIT @l", params(l=bad)).startswith("LIMIT expects")


def test_count_literals_must_be_integers() -> None:
    assert error("SELECT TOP 1.5 * FROM c") == "TOP expects a non-negative integer, got 1.5"
    assert error("SELECT * FROM c OFFSET 1e1 LIMIT 1") == "OFFSET expects a non-negative integer, got 1e1"


# ---- read_items ----------------------------------------------------------------------------------


def read_items_query(items: list[tuple[str, list[Any]]], paths: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The query azure-cosmos' read_items() builds (see _QueryBuilder.build_parameterized_query_for_items)."""
    parts, parameters = [], []
    for i, (item_id, pk_values) in enumerate(items):
        parameters.append({"name": f"@param_id{i}", "value": item_id})
        conditions = [f"c.id = @param_id{i}"]
        for j, path in enumerate(paths):
            if pk_values[j] is None:
                conditions.append(f"IS_DEFINED({path}) = false")
            else:
                parameters.append({"name": f"@param_pk{i}{j}", "value": pk_values[j]})
                conditions.append(f"{path} = @param_pk{i}{j}")
        parts.append(f"( {' AND '.join(conditions)} )")
    return f"SELECT * FROM c WHERE ( {' OR '.join(parts)} )", parameters


def test_read_items_query_with_single_partition_key() -> None:
    text, parameters = read_items_query([("a", ["p1"]), ("c", ["p2"]), ("b", ["p2"]), ("zz", ["p1"])], ["c.pk"])
    assert text.startswith("SELECT * FROM c WHERE ( ( c.id = @param_id0 AND c.pk = @param_pk00 ) OR ( c.id")
    assert [d["id"] for d in compile_query(text, parameters).run(DOCS)] == ["a", "c"]


def test_read_items_query_with_hierarchical_and_absent_keys() -> None:
    docs: list[dict[str, Any]] = [
        {"id": "1", "tenant": "t1", "user": "u1"},
        {"id": "1", "tenant": "t2", "user": "u1"},
        {"id": "2", "tenant": "t1", "user": "u2"},
        {"id": "3", "tenant": "t1"},
        {"id": "4", "o": {"k": "v"}},
    ]
    text, parameters = read_items_query([("1", ["t2", "u1"]), ("2", ["t1", "u2"]), ("3", ["t1", None])], ["c.tenant", "c.user"])
    assert "c.tenant = @param_pk00 AND c.user = @param_pk01" in text
    assert compile_query(text, parameters).run(docs) == [docs[1], docs[2], docs[3]]
    text, parameters = read_items_query([("4", ["v"])], ['c["o"]["k"]'])
    assert compile_query(text, parameters).run(docs) == [docs[4]]


def test_indexed_or_gives_exactly_the_plain_three_valued_or() -> None:
    """The id-keyed OR shortcut must agree with plain OR evaluation, undefined included."""
    text, parameters = read_items_query([("a", ["p1"]), ("b", ["p9"]), ("a", ["p2"])], ["c.pk"])
    condition = text.removeprefix("SELECT * FROM c WHERE ")
    docs: list[dict[str, Any]] = [
        {"id": "a", "pk": "p1"}, {"id": "a", "pk": "p3"}, {"id": "a"}, {"id": "a", "pk": 5},
        {"id": "b", "pk": "p9"}, {"id": "b", "pk": 1}, {"id": "q", "pk": "p1"}, {"id": 7, "pk": "p1"},
        {"pk": "p1"}, {"id": None},
    ]
    indexed = compile_query(f"SELECT VALUE {{'r': {condition}}} FROM c", parameters).run(docs)
    plain = compile_query(f"SELECT VALUE {{'r': {condition} OR false}} FROM c", parameters).run(docs)
    assert indexed == plain
    assert [r.get("r", "undefined") for r in indexed] == [
        True, False, "undefined", "undefined", True, "undefined", False, "undefined", "undefined", "undefined",
    ]
    negated = compile_query(f"SELECT VALUE c FROM c WHERE NOT {condition}", parameters).run(docs)
    assert negated == [docs[1], docs[6]]


def test_single_partition_read_items_query() -> None:
    text = "SELECT * FROM c WHERE c.pk = @pk AND c.id IN (@id0, @id1)"
    assert ids(text, DOCS, pk="p1", id0="b", id1="c") == ["b"]
    assert ids("SELECT * FROM c WHERE c.id IN ( @param_id0, @param_id1 )", DOCS, param_id0="d", param_id1="a") == [
        "a", "d",
    ]
    assert rows("SELECT * FROM c WHERE false", DOCS) == []


# ---- ORDER BY, DISTINCT, TOP, OFFSET/LIMIT --------------------------------------------------------

MIXED: list[dict[str, Any]] = [
    {"id": "obj", "v": {"a": 1}},
    {"id": "str-b", "v": "b"},
    {"id": "true", "v": True},
    {"id": "arr", "v": [1]},
    {"id": "num-2", "v": 2},
    {"id": "null", "v": None},
    {"id": "undef"},
    {"id": "false", "v": False},
    {"id": "str-a", "v": "a"},
    {"id": "num-1.5", "v": 1.5},
]
CROSS_TYPE_ORDER = ["undef", "null", "false", "true", "num-1.5", "num-2", "str-a", "str-b", "arr", "obj"]


def test_order_by_uses_cosmos_cross_type_order() -> None:
    assert ids("SELECT * FROM c ORDER BY c.v", MIXED) == CROSS_TYPE_ORDER
    assert ids("SELECT * FROM c ORDER BY c.v ASC", MIXED) == CROSS_TYPE_ORDER
    assert ids("SELECT * FROM c ORDER BY c.v DESC", MIXED) == CROSS_TYPE_ORDER[::-1]


def test_order_by_several_keys_with_mixed_directions_is_stable() -> None:
    docs = [
        {"id": "1", "g": "b", "n": 1}, {"id": "2", "g": "a", "n": 1}, {"id": "3", "g": "b", "n": 2},
        {"id": "4", "g": "a", "n": 2}, {"id": "5", "g": "a", "n": 2}, {"id": "6", "n": 9},
    ]
    assert ids("SELECT * FROM c ORDER BY c.g ASC, c.n DESC", docs) == ["6", "4", "5", "2", "3", "1"]
    assert ids("SELECT * FROM c ORDER BY c.g DESC, c.n ASC", docs) == ["1", "3", "2", "4", "5", "6"]
    assert ids("SELECT * FROM c ORDER BY c.g, c.n", docs) == ["6", "2", "4", "5", "1", "3"]
    assert ids("SELECT * FROM c ORDER BY c.n DESC", docs) == ["6", "3", "4", "5", "1", "2"]  # ties keep input order


def test_order_by_sorts_documents_before_projection() -> None:
    docs = [{"id": "x", "n": 2}, {"id": "y", "n": 1}]
    assert rows("SELECT VALUE c.id FROM c ORDER BY c.n", docs) == ["y", "x"]
    assert rows("SELECT c.id AS n FROM c ORDER BY c.n DESC", docs) == [{"n": "x"}, {"n": "y"}]


def test_order_by_with_where_top_and_offset_limit() -> None:
    docs = [{"id": str(i), "n": i % 5, "k": i} for i in range(20)]
    assert ids("SELECT TOP 3 * FROM c WHERE c.n > 2 ORDER BY c.k DESC", docs) == ["19", "18", "14"]
    assert ids("SELECT * FROM c ORDER BY c.k OFFSET 5 LIMIT 3", docs) == ["5", "6", "7"]
    assert ids("SELECT * FROM c ORDER BY c.k OFFSET 18 LIMIT 10", docs) == ["18", "19"]
    assert ids("SELECT TOP 2 * FROM c ORDER BY c.k OFFSET 5 LIMIT 3", docs) == ["5", "6"]
    assert rows("SELECT TOP 0 * FROM c", docs) == []


def test_top_and_limit_stop_reading_documents_early_without_order_by() -> None:
    consumed = []

    def stream() -> Iterator[dict[str, Any]]:
        for i in range(1000):
            consumed.append(i)
            yield {"id": str(i)}

    assert ids("SELECT TOP 2 * FROM c", stream()) == ["0", "1"]
    assert len(consumed) == 2
    consumed.clear()
    assert ids("SELECT * FROM c OFFSET 3 LIMIT 2", stream()) == ["3", "4"]
    assert len(consumed) == 5


def test_distinct() -> None:
    docs = [
        {"id": "1", "v": {"a": 1, "b": 2}}, {"id": "2", "v": {"b": 2, "a": 1.0}}, {"id": "3", "v": 1},
        {"id": "4", "v": 1.0}, {"id": "5", "v": True}, {"id": "6", "v": "1"}, {"id": "7"}, {"id": "8", "v": [1, {"x": None}]},
        {"id": "9", "v": [1, {"x": None}]}, {"id": "10"},
    ]
    assert rows("SELECT DISTINCT VALUE c.v FROM c", docs) == [{"a": 1, "b": 2}, 1, True, "1", [1, {"x": None}]]
    assert rows("SELECT DISTINCT c.v FROM c WHERE c.id IN ('3', '4', '7', '10')", docs) == [{"v": 1}, {}]
    assert rows("SELECT DISTINCT VALUE c.v FROM c ORDER BY c.v DESC", docs) == [
        {"a": 1, "b": 2}, [1, {"x": None}], "1", 1, True,
    ]
    assert rows("SELECT DISTINCT TOP 2 VALUE c.v FROM c", docs) == [{"a": 1, "b": 2}, 1]


def test_distinct_applies_before_offset_limit() -> None:
    docs = [{"v": v} for v in ["a", "a", "b", "b", "c"]]
    assert rows("SELECT DISTINCT VALUE c.v FROM c ORDER BY c.v OFFSET 1 LIMIT 2", docs) == ["b", "c"]


# ---- aggregates -----------------------------------------------------------------------------------

NUMS: list[dict[str, Any]] = [{"n": 1}, {"n": 2.5}, {"n": "x"}, {"n": True}, {"n": None}, {}, {"n": 4}]


def test_value_aggregates() -> None:
    assert rows("SELECT VALUE COUNT(1) FROM c", NUMS) == [7]
    assert rows("SELECT VALUE COUNT(c.n) FROM c", NUMS) == [6]  # undefined is not counted, null is
    assert rows("SELECT VALUE SUM(c.n) FROM c", NUMS) == [7.5]
    assert rows("SELECT VALUE AVG(c.n) FROM c", NUMS) == [2.5]
    assert rows("SELECT VALUE MIN(c.n) FROM c", NUMS) == [None]  # null < false/true < numbers < strings
    assert rows("SELECT VALUE MAX(c.n) FROM c", NUMS) == ["x"]
    assert rows("SELECT VALUE MIN(c.n) FROM c WHERE IS_NUMBER(c.n)", NUMS) == [1]
    assert rows("SELECT VALUE COUNT(1) FROM c WHERE c.n > 1", NUMS) == [2]


def test_integer_aggregates_stay_integers() -> None:
    docs = [{"n": 2**70}, {"n": 2}, {"n": 4}]
    total = rows("SELECT VALUE SUM(c.n) FROM c", docs)[0]
    assert total == 2**70 + 6 and type(total) is int
    average = rows("SELECT VALUE AVG(c.n) FROM c WHERE c.n < 10", docs)[0]
    assert average == 3 and type(average) is int
    assert rows("SELECT VALUE AVG(c.n) FROM c WHERE c.n < 4", docs + [{"n": 1}]) == [1.5]


def test_aggregates_in_a_select_list_form_one_object() -> None:
    result = rows("SELECT COUNT(1) AS n, SUM(c.n) AS total, MIN(c.n), MAX(c.n) FROM c WHERE IS_NUMBER(c.n)", NUMS)
    assert result == [{"n": 3, "total": 7.5, "$1": 1, "$2": 4}]
    assert rows("SELECT COUNT(1) FROM c", NUMS) == [{"$1": 7}]


def test_aggregates_over_no_documents() -> None:
    assert rows("SELECT VALUE COUNT(1) FROM c", []) == [0]
    assert rows("SELECT VALUE SUM(c.n) FROM c", []) == [0]
    assert rows("SELECT VALUE AVG(c.n) FROM c", []) == []
    assert rows("SELECT VALUE MIN(c.n) FROM c", []) == []
    assert rows("SELECT VALUE MAX(c.n) FROM c WHERE c.n = 'nothing'", NUMS) == []
    assert rows("SELECT COUNT(1) AS n, SUM(c.n) AS s, AVG(c.n) AS a, MIN(c.n) AS lo, MAX(c.n) AS hi FROM c", []) == [
        {"n": 0, "s": 0}
    ]
    assert rows("SELECT VALUE AVG(c.n) FROM c", [{"n": "x"}]) == []


def test_min_max_over_arrays_or_objects_is_undefined() -> None:
    assert rows("SELECT VALUE MAX(c.n) FROM c", [{"n": 1}, {"n": [2]}]) == []
    assert rows("SELECT VALUE MIN(c.n) FROM c", [{"n": {"a": 1}}, {"n": 1}]) == []


def test_aggregates_inside_constructed_values() -> None:
    docs = [{"n": 1}, {"n": 3}]
    assert rows('SELECT VALUE {"sum": SUM(c.n), "count": COUNT(c.n)} FROM c', docs) == [{"sum": 4, "count": 2}]
    assert rows('SELECT VALUE [{"item": COUNT(1)}] FROM c', docs) == [[{"item": 2}]]
    assert rows("SELECT VALUE COUNT(1) * 10 FROM c", docs) == [20]
    assert rows('SELECT COUNT(1) AS n, "tag" AS t FROM c', docs) == [{"n": 2, "t": "tag"}]


def test_aggregate_misuse_is_an_error() -> None:
    assert error("SELECT c.id, COUNT(1) FROM c").startswith("unsupported: mixing aggregates")
    assert error("SELECT VALUE COUNT(1) + c.n FROM c").startswith("unsupported: mixing aggregates")
    assert error("SELECT * FROM c WHERE COUNT(1) > 1") == "aggregate COUNT is not allowed in WHERE"
    assert error("SELECT * FROM c ORDER BY MAX(c.n)") == "aggregate MAX is not allowed in ORDER BY"
    assert error("SELECT VALUE SUM(COUNT(1)) FROM c") == "unsupported: aggregate COUNT nested inside another aggregate"


def test_order_by_beside_an_aggregate_changes_nothing() -> None:
    docs = [{"n": 3}, {"n": 1}, {"n": 2}]
    assert compile_query("SELECT VALUE COUNT(1) FROM c ORDER BY c.n").run(docs) == [3]
    assert compile_query("SELECT MAX(c.n) AS top FROM c ORDER BY c.n DESC").run(docs) == [{"top": 3}]


def test_evaluate_one_refuses_aggregate_queries() -> None:
    with pytest.raises(TypeError, match="use run"):
        compile_query("SELECT VALUE COUNT(1) FROM c").evaluate_one({"id": "a"})


# ---- streaming API --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "streamable"),
    [
        ("SELECT * FROM c", True),
        ("SELECT c.id, c.n FROM c WHERE c.n > 1", True),
        ("SELECT VALUE c.id FROM c WHERE c.id IN ('a')", True),
        ("SELECT * FROM c ORDER BY c.id", False),
        ("SELECT VALUE COUNT(1) FROM c", False),
        ("SELECT DISTINCT VALUE c.id FROM c", False),
        ("SELECT TOP 5 * FROM c", False),
        ("SELECT * FROM c OFFSET 0 LIMIT 5", False),
    ],
)
def test_streamable(text: str, streamable: bool) -> None:
    assert compile_query(text).streamable is streamable


def test_evaluate_one() -> None:
    doc = {"id": "a", "n": 5}
    assert compile_query("SELECT * FROM c WHERE c.n = @v", params(v=5)).evaluate_one(doc) == (True, doc)
    assert compile_query("SELECT * FROM c WHERE c.n = @v", params(v=6)).evaluate_one(doc) == (False, None)
    assert compile_query("SELECT * FROM c WHERE c.n = @v", params(v="5")).evaluate_one(doc) == (False, None)
    assert compile_query("SELECT c.id FROM c").evaluate_one(doc) == (True, {"id": "a"})
    assert compile_query("SELECT VALUE c.n * 2 FROM c").evaluate_one(doc) == (True, 10)
    assert compile_query("SELECT VALUE c.missing FROM c").evaluate_one(doc) == (False, None)
    assert compile_query("SELECT * FROM c WHERE 1 = 2").evaluate_one(doc) == (False, None)


def test_evaluate_one_agrees_with_run() -> None:
    text = "SELECT c.id, c.n + 1 AS m FROM c WHERE c.n >= 1.5 OR STARTSWITH(c.s, 'B')"
    compiled = compile_query(text)
    streamed = [value for matched, value in map(compiled.evaluate_one, DOCS) if matched]
    assert streamed == compiled.run(DOCS) == [{"id": "a", "m": 4}, {"id": "b", "m": 2.5}]


def test_run_is_deterministic_and_does_not_modify_documents() -> None:
    docs: list[dict[str, Any]] = [{"id": str(i), "n": i % 3, "o": {"k": i}} for i in range(50)]
    snapshot = [dict(d, o=dict(d["o"])) for d in docs]
    compiled = compile_query("SELECT c.id, c.o FROM c WHERE c.n != 1 ORDER BY c.n DESC")
    first = compiled.run(docs)
    assert compiled.run(docs) == first
    assert docs == snapshot
    assert [r["id"] for r in first[:3]] == ["2", "5", "8"]


# ---- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT * FROM c JOIN t IN c.tags", "unsupported: JOIN"),
        ("SELECT t FROM t IN c.tags", "unsupported: iterating an array in FROM"),
        ("SELECT * FROM c.children", "unsupported: FROM over a document path"),
        ("SELECT * FROM (SELECT * FROM c) x", "unsupported: subquery in FROM"),
        ("SELECT c.pk, COUNT(1) FROM c GROUP BY c.pk", "unsupported: GROUP BY"),
        ("SELECT * FROM c WHERE c.s LIKE 'a%'", "unsupported: LIKE"),
        ("SELECT * FROM c WHERE c.s NOT LIKE 'a%' ESCAPE '!'", "unsupported: LIKE"),
        ("SELECT * FROM c WHERE EXISTS(SELECT VALUE t FROM t IN c.tags)", "unsupported: EXISTS(subquery)"),
        ("SELECT ARRAY(SELECT VALUE 1) AS a FROM c", "unsupported: ARRAY(subquery)"),
        ("SELECT VALUE (SELECT VALUE 1) FROM c", "unsupported: subquery"),
        ("SELECT * FROM c WHERE c.id IN (SELECT VALUE 'a')", "unsupported: subquery in IN"),
        ("SELECT * FROM c WHERE udf.isValid(c)", "unsupported: user-defined function udf.isValid"),
        ("SELECT * FROM c WHERE c.s.startsWith('a')", "unsupported: method call .startsWith"),
        ("SELECT VALUE c.n & 1 FROM c", "unsupported: bitwise operator '&'"),
        ("SELECT VALUE c.n | 1 FROM c", "unsupported: bitwise operator '|'"),
        ("SELECT VALUE c.n ^ 1 FROM c", "unsupported: bitwise operator '^'"),
        ("SELECT VALUE ~c.n FROM c", "unsupported: bitwise operator '~'"),
        ("SELECT VALUE 1", "unsupported: a query without FROM"),
    ],
)
def test_unsupported_constructs_are_named(text: str, message: str) -> None:
    assert error(text).startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SELECT * WHERE c.x FROM c", "syntax error at line 1 col 20: unexpected 'FROM'"),
        ("SELECT * FROM c WHERE", "syntax error: unexpected end of query"),
        ("SELECT * FROM c WHERE c.x = ", "syntax error: unexpected end of query"),
        ("SELECT * FROM c WHERE c.x = $1", "syntax error at line 1 col 29: unexpected character '$'"),
        ("SELECT *\nFROM c\nWHERE c.x = = 1", "syntax error at line 3 col 13: unexpected '='"),
        ("SELECT c.id c.x FROM c", "syntax error at line 1 col 13: unexpected 'c'"),
        ("SELECT * FROM c WHERE c.s = 'unterminated", "syntax error at line 1 col 29: unexpected character"),
        ("", "syntax error: unexpected end of query"),
        ('SELECT VALUE {"a": 1, "a": 2} FROM c', "duplicate property 'a' in object literal"),
    ],
)
def test_syntax_errors_point_at_the_problem(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_query_error_is_a_value_error() -> None:
    assert issubclass(QueryError, ValueError)
    with pytest.raises(ValueError, match="unsupported: JOIN"):
        compile_query("SELECT * FROM c JOIN t IN c.tags")


# ---- caching --------------------------------------------------------------------------------------


def test_parse_is_cached_by_query_text() -> None:
    text = "SELECT * FROM c WHERE c.cache_probe = @v"
    query_module._parse.cache_clear()
    first = compile_query(text, params(v=1))
    after_first = query_module._parse.cache_info()
    second = compile_query(text, params(v=2))
    after_second = query_module._parse.cache_info()
    assert (after_first.misses, after_first.hits) == (1, 0)
    assert (after_second.misses, after_second.hits) == (1, 1)
    assert query_module._parse(text) is query_module._parse(text)  # one shared parse result
    assert first.run([{"cache_probe": 1}]) == [{"cache_probe": 1}]
    assert second.run([{"cache_probe": 1}]) == []
