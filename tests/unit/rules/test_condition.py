"""The condition parser against grammar.md §1-2 (libsinsp filter grammar, libs 0.25)."""

from __future__ import annotations

import pytest

from detector.errors import ConditionSyntaxError
from detector.rules.ast import And, Check, FieldRef, MacroRef, Not, Or, Transform, to_text
from detector.rules.condition import parse_condition, parse_field_expr


def check(field: str, op: str, rhs: object = None, arg: str | None = None, modifier: str | None = None) -> Check:
    """A Check node on a plain field, for comparisons (positions take no part in equality)."""
    return Check(FieldRef(field, arg), op, rhs, modifier)  # type: ignore[arg-type]


def syntax_error(text: str) -> ConditionSyntaxError:
    """The error parsing `text` raises (fails the test when it parses)."""
    with pytest.raises(ConditionSyntaxError) as caught:
        parse_condition(text)
    return caught.value


# -- boolean structure ----------------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    """`a or b and c` groups as `a or (b and c)`."""
    node = parse_condition("a or b and c")
    assert node == Or((MacroRef("a"), And((MacroRef("b"), MacroRef("c")))))
    assert to_text(node) == "a or (b and c)"


def test_not_binds_tighter_than_and() -> None:
    """`not a and b` is `(not a) and b`."""
    assert parse_condition("not a and b") == And((Not(MacroRef("a")), MacroRef("b")))


def test_and_or_are_nary_left_to_right() -> None:
    """A chain of `and` is one n-ary node, not a nested pair."""
    assert parse_condition("a and b and c") == And((MacroRef("a"), MacroRef("b"), MacroRef("c")))


def test_parentheses_override_precedence() -> None:
    """`(a or b) and c` keeps the group as the first operand of `and`."""
    node = parse_condition("(a or b) and c")
    assert node == And((Or((MacroRef("a"), MacroRef("b"))), MacroRef("c")))
    assert to_text(node) == "(a or b) and c"


def test_not_not_toggles_twice() -> None:
    """`not not x` is two nested negations of x."""
    assert parse_condition("not not x") == Not(Not(MacroRef("x")))


def test_not_directly_followed_by_parenthesis() -> None:
    """`not(` needs no blank."""
    assert parse_condition("not(x)") == Not(MacroRef("x"))


def test_not_glued_to_a_word_is_a_macro_name() -> None:
    """`notx` is an identifier (a macro reference), not a negation."""
    assert parse_condition("notx") == MacroRef("notx")


def test_and_or_accept_a_parenthesis_instead_of_a_blank() -> None:
    """`a and(b)` and `a or(b)` parse (AndExprTail/OrExprTail allow '(')."""
    assert parse_condition("a and(b)") == And((MacroRef("a"), MacroRef("b")))
    assert parse_condition("a or(b)") == Or((MacroRef("a"), MacroRef("b")))


def test_and_glued_to_a_word_is_rejected() -> None:
    """`a andb` is not `a and b`: a blank or '(' must follow the keyword."""
    assert syntax_error("a andb").column == 3


@pytest.mark.parametrize("text", ["a AND b", "a Or b", "NOT a"])
def test_keywords_are_lower_case(text: str) -> None:
    """Upper-case keywords are not keywords."""
    syntax_error(text)


def test_trailing_and_is_an_error() -> None:
    """A condition may not end with a dangling `and`."""
    syntax_error("a and")


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_condition_is_an_error(text: str) -> None:
    """An empty or blank condition does not parse."""
    syntax_error(text)


def test_blanks_of_every_kind_separate_tokens() -> None:
    """Tabs, newlines, CR and backspace are blanks (lex_blank)."""
    assert parse_condition("a\tand\nb\ror\bc") == Or((And((MacroRef("a"), MacroRef("b"))), MacroRef("c")))


# -- checks and operators -------------------------------------------------------------------


def test_symbol_operators_need_no_blanks() -> None:
    """`ka.verb=get` is a comparison of ka.verb with `get`."""
    assert parse_condition("ka.verb=get") == check("ka.verb", "=", "get")
    assert parse_condition("ka.verb==get") == check("ka.verb", "==", "get")
    assert parse_condition("ka.verb!=get") == check("ka.verb", "!=", "get")


def test_numeric_operators_need_no_blanks() -> None:
    """`<`, `<=`, `>`, `>=` are symbols too and take a number."""
    assert parse_condition("ka.response.code>=400") == check("ka.response.code", ">=", "400")
    assert parse_condition("ka.response.code<0x1F") == check("ka.response.code", "<", "0x1F")
    assert parse_condition("ka.response.code <= -1.5e+3") == check("ka.response.code", "<=", "-1.5e+3")


def test_numeric_operator_rejects_a_word() -> None:
    """The right-hand side of `<` must be a number literal, even for string fields."""
    error = syntax_error("ka.verb < abc")
    assert "number" in error.message
    assert error.column == 11


def test_list_operator_without_blank() -> None:
    """`in(` needs no blank: list operators are matched by prefix."""
    assert parse_condition("ka.verb in(create)") == check("ka.verb", "in", ("create",))
    assert parse_condition("ka.verb intersects(a,b)") == check("ka.verb", "intersects", ("a", "b"))
    assert parse_condition("ka.uri pmatch(/a)") == check("ka.uri", "pmatch", ("/a",))


@pytest.mark.parametrize("op", ["contains", "icontains", "startswith", "endswith", "glob", "iglob", "regex"])
def test_word_operators_require_a_blank_after_them(op: str) -> None:
    """`ka.verb containsx` is not `ka.verb contains x`."""
    assert parse_condition(f"ka.verb {op} x") == check("ka.verb", op, "x")
    error = syntax_error(f"ka.verb {op}x")
    assert error.column == 9


def test_word_operator_glued_to_a_quote_is_rejected() -> None:
    """A quoted value does not stand in for the blank a word operator needs."""
    syntax_error('ka.verb contains"x"')


def test_exists_is_unary() -> None:
    """`exists` takes no value and may be followed by `and`."""
    assert parse_condition("ka.verb exists and x") == And((check("ka.verb", "exists"), MacroRef("x")))
    assert parse_condition("(ka.verb exists)") == check("ka.verb", "exists")


def test_missing_operator_is_an_error_at_its_column() -> None:
    """A field followed by no operator reports the column after the field."""
    error = syntax_error("ka.verb existsx")
    assert error.column == 9
    assert "operator" in error.message


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("ka.uri startswith /healthz?", "/healthz?"),
        ("ka.user.name=system:anonymous", "system:anonymous"),
        ("ka.response.code startswith 2", "2"),
        ("ka.uri = /api/v1/*", "/api/v1/*"),
        ("ka.verb = ka.user.name", "ka.user.name"),
        ("ka.verb = a.b-c_d~e!", "a.b-c_d~e!"),
    ],
)
def test_bare_strings(text: str, value: str) -> None:
    """Bare values run up to a blank, parenthesis, quote, `=` or `,`; a field-like word stays a string."""
    node = parse_condition(text)
    assert isinstance(node, Check)
    assert node.rhs == value


def test_bare_string_stops_at_equals() -> None:
    """`=` ends a bare value, so `a=b` after `=` leaves unexpected text."""
    syntax_error("ka.verb = a=b")


def test_non_ascii_whitespace_belongs_to_a_bare_value() -> None:
    """The grammar's [:space:] is ASCII only: a no-break space is part of the value."""
    assert parse_condition("ka.user.name = a\u00a0b") == check("ka.user.name", "=", "a\u00a0b")


def test_missing_value_is_an_error_at_end() -> None:
    """`ka.verb =` with nothing after reports the end of the text."""
    error = syntax_error("ka.verb =")
    assert error.column == 10


@pytest.mark.parametrize(
    ("quoted", "value"),
    [
        (r'"a\bz"', "a\bz"),
        (r'"a\fz"', "a\fz"),
        (r'"a\nz"', "a\nz"),
        (r'"a\rz"', "a\rz"),
        (r'"a\tz"', "a\tz"),
        (r'"a\\z"', "a\\z"),
        (r'"a\/z"', "a/z"),
        (r'"a\"z"', 'a"z'),
        (r"'a\'z'", "a'z"),
        (r'"a\ z"', "a\\z"),
        (r'"a b"', "a b"),
        (r"'a b'", "a b"),
        ('"a\'b"', "a'b"),
        ("'a\"b'", 'a"b'),
        ('""', ""),
        ('"(x, y)"', "(x, y)"),
    ],
)
def test_quoted_string_escapes(quoted: str, value: str) -> None:
    """Each escape of grammar.md §2.1 unescapes to its character; `\\ ` is a backslash."""
    assert parse_condition(f"ka.verb = {quoted}") == check("ka.verb", "=", value)


@pytest.mark.parametrize(
    ("quoted", "column"),
    [
        (r'"a\x41"', 13),
        (r'"a\q"', 13),
        (r'"a\'b"', 13),
        (r"'a\"b'", 13),
        (r'"\u0041"', 12),
    ],
)
def test_unsupported_escapes_are_errors(quoted: str, column: int) -> None:
    """`\\x`, unknown escapes and the other quote's escape are errors at the backslash's column."""
    error = syntax_error(f"ka.verb = {quoted}")
    assert "unsupported string escape sequence" in error.message
    assert error.column == column


def test_quote_after_backslash_does_not_close_the_string() -> None:
    """`"a\\\\"` cannot be closed (the quirk of §2.1), so the string is unterminated."""
    error = syntax_error(r'ka.verb = "a\\"')
    assert "unterminated" in error.message
    assert error.column == 11


def test_unterminated_quote_is_an_error() -> None:
    """A missing closing quote is reported."""
    syntax_error("ka.verb = 'abc")


def test_empty_list_is_allowed() -> None:
    """`()` (with or without blanks inside) is an empty list."""
    assert parse_condition("ka.verb in ()") == check("ka.verb", "in", ())
    assert parse_condition("ka.verb in ( )") == check("ka.verb", "in", ())


def test_list_values_are_bare_or_quoted_with_blanks_around_commas() -> None:
    """List items may be bare or quoted, with blanks allowed around commas."""
    node = parse_condition("ka.verb in ( a ,'b c' ,\"d\",e )")
    assert node == check("ka.verb", "in", ("a", "b c", "d", "e"))


@pytest.mark.parametrize("text", ["ka.verb in (a,)", "ka.verb in (,a)", "ka.verb in ((a))", "ka.verb in (a b)",
                                  "ka.verb in (a"])
def test_malformed_lists_are_errors(text: str) -> None:
    """Trailing/leading commas, nesting, missing commas and unclosed lists do not parse."""
    syntax_error(text)


def test_list_operator_with_bare_identifier_is_a_single_value() -> None:
    """`ka.verb in mylist` (an undefined list name) compares against the one string `mylist`."""
    node = parse_condition("ka.verb in mylist")
    assert node == check("ka.verb", "in", ("mylist",))
    assert to_text(node) == "ka.verb in (mylist)"


def test_list_operator_rejects_a_quoted_scalar() -> None:
    """A list operator needs `( ... )` or an identifier, not a quoted string."""
    syntax_error('ka.verb in "a"')


# -- field arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "arg"),
    [
        ("jevt.value[/a~1b] exists", "jevt.value", "/a~1b"),
        ("jevt.value[/annotations/authorization.k8s.io~1decision] exists", "jevt.value",
         "/annotations/authorization.k8s.io~1decision"),
        ("ka.req.volume.hostpath[/proc*]=true", "ka.req.volume.hostpath", "/proc*"),
        ("ka.req.pod.containers.image[0] exists", "ka.req.pod.containers.image", "0"),
        ('jevt.value["/a b"] exists', "jevt.value", "/a b"),
        ("jmes.value['spec.containers[0].image'] exists", "jmes.value", "spec.containers[0].image"),
        ('jevt.value[""] exists', "jevt.value", ""),
    ],
)
def test_field_arguments(text: str, name: str, arg: str) -> None:
    """Bare arguments keep `/ * ~ . :`; quoted arguments may hold blanks and brackets."""
    node = parse_condition(text)
    assert isinstance(node, Check)
    assert node.lhs == FieldRef(name, arg)
    assert parse_condition(to_text(node)) == node


def test_empty_bare_field_argument_is_an_error() -> None:
    """`jevt.value[]` does not parse (fields.md §2)."""
    syntax_error("jevt.value[] exists")


def test_unclosed_field_argument_is_an_error() -> None:
    """A field argument needs its closing bracket."""
    syntax_error("jevt.value[/a exists")


def test_field_name_needs_a_dot() -> None:
    """A word without a dot is a macro, so an operator after it is unexpected."""
    syntax_error("verb = get")


# -- transformers, val() and modifiers ------------------------------------------------------


def test_transformer_on_the_left() -> None:
    """`tolower(field)` is a field expression on the left of a check."""
    node = parse_condition("tolower(ka.verb) = get")
    assert node == Check(Transform("tolower", (FieldRef("ka.verb"),)), "=", "get")
    assert to_text(node) == "tolower(ka.verb) = get"


def test_nested_transformers() -> None:
    """Transformers nest, e.g. `len(toupper(x))` compared with a number."""
    node = parse_condition("len(toupper(ka.user.groups)) > 1")
    inner = Transform("toupper", (FieldRef("ka.user.groups"),))
    assert node == Check(Transform("len", (inner,)), ">", "1")


def test_val_on_the_right() -> None:
    """`val(field)` makes the right-hand side a field of the same event."""
    node = parse_condition("ka.verb = val(ka.user.name)")
    assert node == check("ka.verb", "=", Transform("val", (FieldRef("ka.user.name"),)))
    assert to_text(node) == "ka.verb = val(ka.user.name)"


def test_transformer_on_the_right_is_a_field_not_a_string() -> None:
    """A bare value starting with `tolower(` is parsed as a field expression."""
    node = parse_condition("ka.verb = tolower(ka.user.name)")
    assert node == check("ka.verb", "=", Transform("tolower", (FieldRef("ka.user.name"),)))


def test_val_is_not_allowed_on_the_left() -> None:
    """`val(` is not a left-hand side transformer."""
    syntax_error("val(ka.verb) = x")


@pytest.mark.parametrize("modifier", ["oneof", "anyof", "allof"])
def test_string_operator_modifiers(modifier: str) -> None:
    """`startswith oneof (a, b)` carries the modifier and a list."""
    node = parse_condition(f"ka.uri startswith {modifier} (/a, /b)")
    assert node == check("ka.uri", "startswith", ("/a", "/b"), modifier=modifier)
    assert parse_condition(to_text(node)) == node


def test_modifier_word_as_a_value_round_trips() -> None:
    """A value that reads like a modifier (`oneof`) is quoted when written back."""
    node = check("ka.verb", "=", "oneof")
    assert parse_condition(to_text(And((node, MacroRef("x"))))) == And((node, MacroRef("x")))


def test_parse_field_expr_reads_one_field() -> None:
    """parse_field_expr accepts a field or transformer and rejects trailing text."""
    assert parse_field_expr("tolower(ka.user.name)") == Transform("tolower", (FieldRef("ka.user.name"),))
    with pytest.raises(ConditionSyntaxError):
        parse_field_expr("ka.verb x")


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("a b", 3),
        ("a)", 2),
        ("(a", 3),
        ("ka.verb = x y", 13),
        ("a and ka.verb ~ x", 15),
        ("a and =", 7),
    ],
)
def test_syntax_errors_carry_a_one_based_column(text: str, column: int) -> None:
    """Every syntax error points at the 1-based column where parsing stopped."""
    assert syntax_error(text).column == column


def test_unexpected_token_message_names_what_is_expected() -> None:
    """Extra text after a whole expression says `or`/`and` were expected."""
    assert "expecting 'or', 'and'" in syntax_error("a b").message


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    """A condition nested deeper than the parser can go fails as a ConditionSyntaxError."""
    depth = 1200
    error = syntax_error("(" * depth + "a" + ")" * depth)
    assert "nested too deeply" in error.message


def test_moderate_nesting_parses() -> None:
    """Fifty nested groups parse to the inner node."""
    assert parse_condition("(" * 50 + "a" + ")" * 50) == MacroRef("a")


# -- writing back ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["a b", 'say "hi"', "a\\", "a\\\\", "back\\slash", "x=y", "(p)", "a,b", "", "tab\there", "nb\u00a0sp",
     "it's", "val(x)", "allof"],
)
def test_to_text_quotes_values_so_they_parse_back(value: str) -> None:
    """Any string value written by to_text parses back to itself (incl. a trailing backslash)."""
    node = check("ka.user.name", "=", value)
    assert parse_condition(to_text(node)) == node
    listed = check("ka.user.name", "in", (value, "z"))
    assert parse_condition(to_text(listed)) == listed


def test_to_text_of_negated_group() -> None:
    """A negated conjunction is written with its parentheses."""
    node = parse_condition("not (a and b)")
    assert node == Not(And((MacroRef("a"), MacroRef("b"))))
    assert to_text(node) == "not (a and b)"
