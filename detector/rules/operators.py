"""Value-level semantics of Falco's operators, built once per check.

Each builder takes the constant right-hand side and returns `test(value) -> bool` for one
non-absent string value. Absent values never reach these tests (absent => false).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import posixpath
import re
from collections.abc import Callable, Iterable

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
            return _matches(glob_regex(rhs, fold_case=op == "iglob"))
        case "regex":
            return _matches(compile_regex(rhs))
        case "pmatch":
            return pmatch_test([rhs])
        case _:
            raise ConditionSyntaxError(f"operator '{op}' is not supported for string fields")


def _matches(pattern: re.Pattern[str]) -> Test:
    full = pattern.fullmatch
    return lambda v: full(v) is not None


_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~", "xdigit": "0-9A-Fa-f",
    "word": r"\w", "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
}
_POSIX_CLASS = re.compile(r"\[:(\w+):\]")


def compile_regex(pattern: str) -> re.Pattern[str]:
    """Falco uses RE2 full matches. Python's engine accepts the same common syntax; POSIX
    classes such as `[[:alpha:]]` (RE2 understands them, Python does not) are translated."""
    pattern = _POSIX_CLASS.sub(lambda m: _POSIX_CLASSES.get(m.group(1), m.group(0)), pattern)
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConditionSyntaxError(f"invalid regular expression {pattern!r}: {exc}") from None


def glob_regex(pattern: str, fold_case: bool) -> re.Pattern[str]:
    """fnmatch(3) without FNM_PATHNAME: `*` crosses '/', backslash escapes, [!...] classes."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\":
            if i == len(pattern):
                out.append("(?!)")  # glibc: a trailing backslash never matches
                break
            out.append(re.escape(pattern[i]))
            i += 1
        elif char == "[" and (bracket := _bracket(pattern, i)) is not None:
            out.append(bracket[0])
            i = bracket[1]
        else:
            out.append(re.escape(char))
    flags = re.DOTALL | (re.IGNORECASE | re.ASCII if fold_case else 0)
    return re.compile("".join(out), flags)


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
    globbed = [[glob_regex(c, False) if _has_glob(c) else c for c in p] for p in prefixes
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


def _glob_prefix(prefix: list[str | re.Pattern[str]], parts: list[str]) -> bool:
    if len(prefix) > len(parts):
        return False
    for want, have in zip(prefix, parts, strict=False):
        if isinstance(want, str) and want != have:
            return False
        if not isinstance(want, str) and not want.fullmatch(have):
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
