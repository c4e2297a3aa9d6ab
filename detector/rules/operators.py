"""Value-level semantics of Falco's operators, built once per check.

Each builder takes the constant right-hand side and returns `test(value) -> bool` for one
non-absent string value. Absent values never reach these tests (absent => false).

Values come from the events, that is from whoever sends requests to the API server, and
patterns from rule authors: every test runs in time linear in the value for a given pattern.
`regex` is RE2 (as in Falco, with its syntax checked at load), and `glob` never backtracks.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterable

import re2  # google-re2
from re2 import _re2

from detector.errors import ConditionSyntaxError

Test = Callable[[str], bool]
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Addresses remembered per CIDR check: enough for a cluster's nodes, pods and users, small
# enough (~0.4 MB) that a stream of ever-new client addresses cannot grow memory for long.
_CIDR_MEMO_LIMIT = 4096


def ascii_lower(text: str) -> str:
    """C's tolower: ASCII letters only (Python's lower() also folds non-ASCII)."""
    return text.translate(_ASCII_LOWER)


def string_test(op: str, rhs: str) -> Test:  # noqa: PLR0912 - one dispatcher over operators
    """The test for one string operator against one constant."""
    match op:
        case "=" | "==":
            return rhs.__eq__
        case "!=":
            return rhs.__ne__
        case "<":
            return lambda v: v < rhs
        case "<=":
            return lambda v: v <= rhs
        case ">":
            return lambda v: v > rhs
        case ">=":
            return lambda v: v >= rhs
        case "contains":
            return lambda v: rhs in v
        case "icontains":
            lowered = ascii_lower(rhs)
            return lambda v: lowered in ascii_lower(v)
        case "startswith":
            return lambda v: v.startswith(rhs)
        case "endswith":
            return lambda v: v.endswith(rhs)
        case "glob" | "iglob":
            return glob_test(rhs, fold_case=op == "iglob")
        case "regex":
            return regex_test(rhs)
        case "pmatch":
            return pmatch_test([rhs])
        case _:
            raise ConditionSyntaxError(f"operator '{op}' is not supported for string fields")


_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~", "xdigit": "0-9A-Fa-f",
    "word": r"\w", "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
}


def _re2_options() -> re2.Options:
    """RE2::POSIX, as libsinsp compiles `regex` (POSIX syntax, leftmost-longest): Perl classes
    (`\\d`), `(?i)` flags, backreferences and lookarounds are syntax errors, as in Falco."""
    options = re2.Options()
    options.posix_syntax = True
    options.longest_match = True
    options.log_errors = False  # errors are raised, not printed by RE2 on stderr
    options.never_capture = True  # only whether it matches counts
    return options


_RE2_OPTIONS = _re2_options()
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_NO_MATCH = (-1, -1)


def regex_test(pattern: str) -> Test:
    """A full match with RE2 (Falco's ANCHOR_BOTH), linear in the value's length.

    The binding's core is called directly: its `re`-like wrapper costs ~12 us a call, the core
    ~2 us. (RE2::Set would be as quick but may give up, unmatched, on a large DFA.)"""
    compiled = _re2.RE2(pattern.encode("utf-8", "surrogatepass"), _RE2_OPTIONS)
    if not compiled.ok():
        error = compiled.error()
        error = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        raise ConditionSyntaxError(
            f"invalid regular expression {pattern!r}: {error} (regex is RE2 with POSIX syntax, as in Falco: "
            "no backreferences, lookarounds, (?flags) or Perl classes like \\d; write [0-9], [[:space:]]...)")
    match = compiled.Match

    def test(value: str) -> bool:
        data = value.encode("utf-8", "surrogatepass")
        return bool(match(_ANCHOR_BOTH, data, 0, len(data))[0] != _NO_MATCH)

    return test


def glob_test(pattern: str, fold_case: bool) -> Test:
    """fnmatch(3) without FNM_PATHNAME: `*` crosses '/', backslash escapes, [!...] classes.

    Linear in the value: between stars the pattern is fixed-width pieces (each `?`, class or
    character is one character), so the first piece is matched at the start, the last at the
    end, and each other one at its leftmost place after the one before (which is never worse
    than a later place). A backtracking `.*a.*a.*b` costs the cube of the length instead."""
    pieces = _glob_pieces(pattern, fold_case)
    if pieces is None:
        return lambda v: False  # glibc: a trailing backslash never matches
    if len(pieces) == 1:
        whole = pieces[0][0].fullmatch
        return lambda v: whole(v) is not None
    (first, first_width), *middle, (last, last_width) = pieces
    inner = [piece.search for piece, width in middle if width]

    def test(value: str) -> bool:
        end = len(value) - last_width
        if end < first_width or not first.match(value) or not last.fullmatch(value, end):
            return False
        position = first_width
        for search in inner:
            found = search(value, position, end)
            if found is None:
                return False
            position = found.end()
        return True

    return test


def _glob_pieces(pattern: str, fold_case: bool) -> list[tuple[re.Pattern[str], int]] | None:
    """The pattern split at its stars: one regex per piece (with its width in characters)."""
    pieces: list[list[str]] = [[]]
    i = 0
    while i < len(pattern):
        char = pattern[i]
        i += 1
        if char == "*":
            pieces.append([])
        elif char == "?":
            pieces[-1].append(".")
        elif char == "\\":
            if i == len(pattern):
                return None
            pieces[-1].append(re.escape(pattern[i]))
            i += 1
        elif char == "[" and (bracket := _bracket(pattern, i)) is not None:
            pieces[-1].append(bracket[0])
            i = bracket[1]
        else:
            pieces[-1].append(re.escape(char))
    flags = re.DOTALL | (re.IGNORECASE | re.ASCII if fold_case else 0)
    return [(re.compile("".join(atoms), flags), len(atoms)) for atoms in pieces]


def _bracket(pattern: str, start: int) -> tuple[str, int] | None:
    """The regex for the bracket expression whose body starts at `start` (just after '['),
    and where it ends; None when it is not closed (then '[' is a literal, as in glibc).

    Every member is escaped for Python (so `&&`, `--`, `[` mean themselves), `\\x` is x,
    `[:alpha:]`-style classes are the C locale's, and a reversed range matches nothing.
    """
    i = start
    negate = i < len(pattern) and pattern[i] in "!^"
    i += negate
    members: list[str] = []
    first = True
    while i < len(pattern):
        char = pattern[i]
        if char == "]" and not first:
            if not members:
                return ("." if negate else "(?!)"), i + 1
            return "[" + ("^" if negate else "") + "".join(members) + "]", i + 1
        first = False
        if char == "[" and pattern.startswith(":", i + 1):
            end = pattern.find(":]", i + 2)
            if end != -1 and pattern[i + 2 : end] in _POSIX_CLASSES:
                members.append(_POSIX_CLASSES[pattern[i + 2 : end]])
                i = end + 2
                continue
        low, i = _bracket_char(pattern, i)
        if low is None:
            return None
        if pattern.startswith("-", i) and i + 1 < len(pattern) and pattern[i + 1] != "]":
            high, i = _bracket_char(pattern, i + 1)
            if high is None:
                return None
            if low <= high:
                members.append(f"{re.escape(low)}-{re.escape(high)}")
            continue
        members.append(re.escape(low))
    return None


def _bracket_char(pattern: str, i: int) -> tuple[str | None, int]:
    if pattern[i] == "\\":
        return (pattern[i + 1], i + 2) if i + 1 < len(pattern) else (None, i + 1)
    return pattern[i], i + 1


def pmatch_test(paths: Iterable[str]) -> Test:
    """Path-prefix match: some path's components are a prefix of the value's components;
    components with glob characters match by glob."""
    prefixes = [[c for c in p.split("/") if c] for p in paths]
    exact = {"/" + "/".join(p) for p in prefixes if not any(_has_glob(c) for c in p)}
    globbed = [[glob_test(c, False) if _has_glob(c) else c for c in p] for p in prefixes
               if any(_has_glob(c) for c in p)]

    def test(value: str) -> bool:
        parts = [c for c in value.split("/") if c]
        for depth in range(len(parts) + 1):
            if "/" + "/".join(parts[:depth]) in exact:
                return True
        return any(_glob_prefix(p, parts) for p in globbed)

    return test


def _has_glob(component: str) -> bool:
    return any(c in component for c in "*?[")


def _glob_prefix(prefix: list[str | Test], parts: list[str]) -> bool:
    if len(prefix) > len(parts):
        return False
    for want, have in zip(prefix, parts, strict=False):
        if isinstance(want, str) and want != have:
            return False
        if not isinstance(want, str) and not want(have):
            return False
    return True


def ip_set_test(values: Iterable[str]) -> Test:
    """Membership of an address in a set of addresses and CIDR networks, memoised per value."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ConditionSyntaxError(f"{value!r} is not an IP address or CIDR network") from None
    memo: dict[str, bool] = {}

    def test(value: str) -> bool:
        known = memo.get(value)
        if known is None:
            known = _in_networks(value, networks)
            if len(memo) >= _CIDR_MEMO_LIMIT:
                memo.clear()
            memo[value] = known
        return known

    return test


def _in_networks(value: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)


def transform(func: str) -> Callable[[str], str | None]:
    """String transformers applied element-wise: tolower, toupper, b64 (decode), basename."""
    match func:
        case "tolower":
            return ascii_lower
        case "toupper":
            return lambda v: v.translate(_ASCII_UPPER)
        case "b64":
            return _b64_decode
        case "basename":
            return lambda v: posixpath.basename(v) if not v.endswith("/") else ""
        case _:
            raise ConditionSyntaxError(f"transformer '{func}' is not supported")


def _b64_decode(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None
