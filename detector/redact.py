"""Masking of credentials that show up in audit data (exec commands, request URIs, bodies).

Lives at the bottom of the package because both the field table (which renders exec
commands) and the alert stage (which redacts payloads) need it. Three entry points:

- `mask_secrets(text)`: any text (a field value, a rendered JSON document, a response body);
- `mask_argv(args)`: a command as its argument list (the `command=` parameters of an exec),
  where a credential may be the argument after its flag;
- `is_credential_name(name)`: does an environment variable, ConfigMap key or JSON key name
  say it holds a credential?

Every credential value becomes `****`; the key, flag, scheme or user name before it stays, so
an alert still says what was done. What is masked, per form and per tool, and what cannot be,
is the table in docs/threat-model.md ("Credential masking").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from urllib.parse import quote_plus, unquote_plus

MASK = "****"

# --- names ------------------------------------------------------------------------------------
# A name holds a credential when one of its parts (split at -_. and camelCase) is a credential
# word, or names a key of some kind (`api_key`, `AccessKey`); `...key` alone counts for names
# written as environment variables (`STRIPE_KEY`), not for JSON keys (`"key": "app"` in a
# toleration or a selector is not a secret). A last part that says the value is a reference,
# a file, a duration or a switch makes it no credential: `secretName`, `--token-file`,
# `tokenExpirationSeconds`, `--authorization-mode`, `AUTH_ENABLED`.
_CREDENTIAL_PARTS = frozenset({
    "password", "passwd", "passphrase", "pwd", "pass", "pw", "token", "secret", "credential", "credentials",
    "apikey", "auth", "bearer", "signature", "sig", "creds", "privatekey", "secretkey", "accesskey",
})
_CREDENTIAL_SUBSTRINGS = ("password", "passwd", "passphrase", "token", "secret", "apikey", "credential")
_KEY_QUALIFIERS = frozenset({
    "api", "access", "private", "secret", "signing", "encryption", "master", "client", "account", "shared",
    "storage", "sas", "ssh", "license", "app", "auth", "session", "consumer", "subscription",
})
_NOT_A_VALUE_PARTS = frozenset({
    "name", "names", "ref", "refs", "file", "files", "path", "dir", "ttl", "seconds", "expiration", "mode",
    "type", "kind", "length", "id", "ids", "enabled", "disabled", "enable", "disable", "url", "uri",
    "endpoint", "audience", "audiences", "provider", "method", "user", "username", "policy", "required",
    "timeout", "version", "header", "prefix", "namespace", "source", "stdin", "env", "selector", "count",
    "duration", "period", "format", "strategy", "reviews", "requests", "volume", "mount", "project",
})
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


@functools.lru_cache(maxsize=4096)
def is_credential_name(name: str, env_style: bool = True) -> bool:
    """Does this key or variable name say its value is a credential? `env_style` lets a bare
    `key` part count (`SSH_KEY`, `stripe.key`), which JSON keys such as `key` must not."""
    parts = [p.lower() for p in _PART.findall(name)]
    if not parts or parts[-1] in _NOT_A_VALUE_PARTS:
        return False
    for index, part in enumerate(parts):
        if part in _CREDENTIAL_PARTS or any(word in part for word in _CREDENTIAL_SUBSTRINGS):
            return True
        if part == "key" and (env_style or (index > 0 and parts[index - 1] in _KEY_QUALIFIERS)):
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _is_flag_key(key: str) -> bool:
    name = key.lstrip("-")
    return is_credential_name(name, name.isupper() or key.startswith("-"))


@functools.lru_cache(maxsize=4096)
def _is_key(key: str, quoted: bool) -> bool:
    """Does the key of a `key=value` / `key: value` pair (`quoted` if in quotes) name a credential?"""
    return is_credential_name(key.lstrip("-"), not quoted and (key.isupper() or key.startswith("-")))


# --- commands -----------------------------------------------------------------------------------
# Short flags whose value is a password, per tool (decided per tool: `-p` is mysql's password but
# a port for docker run, kubectl port-forward or ssh; `-u user:pw` is curl's, docker's -u is a uid).
# `attached`: the value may follow the flag in the same argument (`-pX`).
_PASSWORD_FLAGS: dict[str, tuple[frozenset[str], bool]] = {}
for _names, _flags, _attached in (
    ("mysql mariadb mysqldump mysqladmin mysqlimport mysqlshow mysqlcheck mysqlpump mysqlsh mariadb-dump "
     "mariadb-admin mariadb-import mariadb-check", "-p", True),
    ("sshpass", "-p", True),
    ("mongo mongosh mongodump mongorestore mongoexport mongoimport mongostat mongotop mongofiles", "-p", True),
    ("redis-cli keydb-cli valkey-cli", "-a", True),
    ("ldapsearch ldapmodify ldapadd ldapdelete ldapwhoami ldappasswd ldapcompare ldapmodrdn", "-w", True),
    ("sqlcmd bcp isql", "-P", True),
    ("zip unzip 7z 7za 7zr", "-P -p", True),
    ("login", "-p", True),  # `docker login -p X`; docker's own -p (run, create) is a port
):
    for _name in _names.split():
        _PASSWORD_FLAGS[_name] = (frozenset(_flags.split()), _attached)
# `-u user:password` (curl's --user, --proxy-user), `-U user%password` (smbclient).
_USER_PASSWORD_FLAGS: dict[str, tuple[frozenset[str], str]] = {
    "curl": (frozenset({"-u", "--user", "-U", "--proxy-user"}), ":"),
    "smbclient": (frozenset({"-U", "--user"}), "%"),
    "rpcclient": (frozenset({"-U", "--user"}), "%"),
}
# Words that take the next argument as a password: redis' AUTH command (`AUTH pw`, `AUTH user pw`).
_REDIS = frozenset({"redis-cli", "keydb-cli", "valkey-cli"})
# Registry clients whose `login` subcommand takes `-p password`.
_LOGIN_CLIENTS = frozenset({"docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras", "crane", "regctl"})
_TOOLS = (frozenset(_PASSWORD_FLAGS) - {"login"}) | frozenset(_USER_PASSWORD_FLAGS) | _LOGIN_CLIENTS
# Tools whose flag may hold its credential in the same argument (`-pX`, `--user=a:b`): the only
# rules that apply to a command's last argument.
_ATTACHED = frozenset(t for t, (_f, attached) in _PASSWORD_FLAGS.items() if attached) | frozenset(_USER_PASSWORD_FLAGS)
_FLAG_WORD = re.compile(r"--?[A-Za-z][\w.-]*")


def _tool(arg: str, current: str | None) -> str | None:
    """The tool whose flags the arguments after `arg` are (`current` if `arg` names none)."""
    name = arg.rsplit("/", 1)[-1] if "/" in arg else arg
    if name == "login" and current in _LOGIN_CLIENTS:
        return "login"
    return name if name in _TOOLS else current


def mask_argv(args: Sequence[str]) -> list[str]:
    """Each argument of a command with its credentials masked: in the argument itself
    (`--password=X`, `-pX` of mysql, `sh -c "..."`), or as the argument after its flag
    (`--token X`, `-p X` of sshpass, `-u user:X` of curl, `-a X` of redis-cli, `AUTH X`)."""
    return _mask_context(args, [mask_secrets(arg) for arg in args])


def _mask_context(args: Sequence[str], out: list[str]) -> list[str]:
    """`out` (the arguments, each masked alone) with what the tool's flags say is a credential masked."""
    tool: str | None = None
    index, count = 0, len(args)
    while index < count:
        arg = args[index]
        tool = _tool(arg, tool)
        # Most arguments are words no tool or flag rule looks at: neither a flag, nor AUTH, nor
        # after a known tool (which all take their credentials after a flag or AUTH).
        if (tool is None and arg[:1] != "-") or (index + 1 == count and tool not in _ATTACHED):
            index += 1
            continue
        index += _mask_next(tool, args, out, index)
    return out


def _mask_next(tool: str | None, args: Sequence[str], out: list[str], index: int) -> int:
    """Mask what `args[index]` says is a credential; the number of arguments consumed."""
    arg, rest = args[index], len(args) - index - 1
    if arg[:1] != "-" and not (tool in _REDIS and arg.upper() == "AUTH"):
        return 1  # every rule below starts at a flag, or at redis' AUTH
    if tool in _PASSWORD_FLAGS:
        flags, attached = _PASSWORD_FLAGS[tool]
        if arg in flags and rest:
            out[index + 1] = _masked_word(args[index + 1])
            return 2
        if attached and arg[:2] in flags and len(arg) > 2 and arg[2:] != MASK:
            out[index] = arg[:2] + MASK
            return 1
    if tool in _USER_PASSWORD_FLAGS:
        flags, separator = _USER_PASSWORD_FLAGS[tool]
        flag, equals, value = arg.partition("=")
        if flag in flags and (equals or rest):
            user = value if equals else args[index + 1]
            masked = _user_password(user, separator)
            if equals:
                out[index] = f"{flag}={masked}"
                return 1
            out[index + 1] = masked
            return 2
        if arg[:2] in flags and len(arg) > 2 and not arg.startswith("--"):
            out[index] = arg[:2] + _user_password(arg[2:], separator)
            return 1
    if tool in _REDIS and arg.upper() == "AUTH" and rest:
        last = min(index + 2, len(args) - 1) if rest >= 2 and not args[index + 2].startswith("-") else index + 1
        out[last] = _masked_word(args[last])
        return last - index + 1
    if rest and _FLAG_WORD.fullmatch(arg) and _is_flag_key(arg) and not args[index + 1].startswith("-"):
        out[index + 1] = _masked_word(args[index + 1])
        return 2
    if arg in ("--from-literal", "--from-env-file-literal") and rest:
        out[index + 1] = _literal(args[index + 1])
        return 2
    return 1


def _masked_word(value: str) -> str:
    return value if value in (MASK, "") else MASK


def _user_password(value: str, separator: str) -> str:
    user, found, _password = value.partition(separator)
    return f"{user}{separator}{MASK}" if found else value


def _literal(value: str) -> str:
    key, found, _value = value.partition("=")
    return f"{key}={MASK}" if found else value


def mask_command(args: Sequence[str]) -> str:
    """The command line of `args` (joined by spaces) with its credentials masked."""
    return mask_secrets(" ".join(mask_argv(args)))


# --- text -------------------------------------------------------------------------------------------
# Every pattern needs one of these; most texts have none, and one search is far cheaper than the
# passes below (this runs on every string field of every alert).
_TOOL_NAMES = "|".join(sorted((re.escape(t) for t in _TOOLS), key=len, reverse=True))
# Lowercase substrings one of which every pass needs (str `in` is far cheaper than a regex).
_ANCHORS = ("token", "pass", "pwd", "pw", "secret", "key", "auth", "credential", "creds", "bearer", "basic", "sig",
            "cookie", "literal", "://", "command=", "curl", "redis", "mysql", "maria", "mongo", "ldap", "sqlcmd", "bcp",
            "isql", "zip", "7z", "login", "smb", "rpc", "negotiate", "digest")
_KEY_WORDS = ("token", "pass", "pwd", "pw", "secret", "key", "auth", "credential", "creds", "bearer", "sig", "cookie")
_TOOL_HINTS = ("curl", "redis", "mysql", "maria", "mongo", "ldap", "sqlcmd", "bcp", "isql", "zip", "7z", "login",
               "smb", "rpc", "sshpass", "keydb", "valkey")
_KEY_CHARS = r"[A-Za-z0-9_.-]"
# Values. Quoted ones are masked whole (the quotes stay); a JSON-escaped one (`\"x\"`, inside a
# JSON string) too. A bare value after `:` (JSON, YAML flow) ends at , } ] too; after `=` (k=v,
# flags, environment) it ends at blanks, `&` and `;` only.
_QUOTED = r"""\\"(?:[^"\\]|\\[^"])*\\"|"(?:[^"\\]|\\.)*"|'[^']*'"""
_BARE_EQ = r"""(?:[^\s&;'"\\]|\\(?![nrt"\\/]))+"""
_BARE_COLON = r"""(?:[^\s&;'"\\,{}\[\]]|\\(?![nrt"\\/]))+"""
# Keys are whole words (possessive: no backtracking into them); whether a key names a credential is
# decided by is_credential_name (memoised), which is far cheaper than a case-insensitive alternation.
_KEYED = re.compile(
    rf"""(?P<q>\\?["']?)(?<![\w.-])(?P<key>{_KEY_CHARS}++)(?P=q)"""
    rf"""(?:(?P<eq>[ \t]*=[ \t]*)(?P<v1>{_QUOTED}|{_BARE_EQ})"""
    rf"""|(?P<colon>[ \t]*:[ \t]*)(?P<v2>{_QUOTED}|{_BARE_COLON}))""")
_FLAG_SPACE = re.compile(
    rf"""(?<![\w-])(?P<key>--?[A-Za-z]{_KEY_CHARS}*+)(?P<sep>[ \t]+)(?P<value>(?!-)(?:{_QUOTED}|{_BARE_EQ}))""")
_HEADER = re.compile(
    r"""(?P<key>\b(?:proxy-)?authorization|\bcookie|\bx-api-key|\bx-auth-token)"""
    r"""(?P<sep>\\?["']?[ \t]*[:=][ \t]*\\?["']?)"""
    r"""(?P<scheme>[A-Za-z][\w.-]*[ \t]+(?=\S))?"""
    rf"""(?P<value>{_QUOTED}|(?!\+)(?:[^\s"'\\,;]|"[^"]*")+(?:[,;][ \t]*(?:[^\s"'\\,;]|"[^"]*")+)*)""",
    re.IGNORECASE)
_SCHEME = re.compile(r"(?i)\b(?P<scheme>bearer|basic|token|negotiate|digest)[ \t]+(?P<value>[A-Za-z0-9._~+/=-]{4,})")
_USERINFO = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@\"'\\]*:)(?P<value>[^\s/@\"'\\]+)@")
_PASS_PHRASE = re.compile(r"(?<![\w-])(?P<pre>pass:)(?P<value>" + _QUOTED + "|" + _BARE_EQ + ")")
_LITERAL = re.compile(r"(?P<pre>--from-literal[= ][^=\s\"'\\]+=)(?P<value>" + _QUOTED + "|" + _BARE_EQ + ")")
_QUERY = re.compile(r"\?(?P<query>[^\s\"'<>#\\]*=[^\s\"'<>#\\]*)")
_COMMAND = re.compile(r"(?<![\w.-])(?:[\w.-]*/)?(?P<tool>" + _TOOL_NAMES + r")(?=[ \t])(?P<args>[^;|&\n\r`()]*)")


# Public: every credential `mask_secrets` or `is_credential_name` recognises needs one of these in
# the lowercased text (alert redaction checks a whole request object for them at once).
SECRET_WORDS = _ANCHORS


def might_hold_secret(text: str) -> bool:
    """Cheap pre-check: could `text` hold a credential that `mask_secrets` masks?"""
    if len(text) <= _MEMO_MAX_CHARS:
        return _might_hold_secret_memo(text)
    return _anchored(text.lower())


def _anchored(low: str) -> bool:
    return any(anchor in low for anchor in _ANCHORS)


# Alert fields repeat (user names, namespaces, verbs, user agents): a bounded memo answers the
# repeats in ~0.1 us instead of a case-insensitive search, for short values only (the memo must
# not pin large strings).
_MEMO_MAX_CHARS = 256


@functools.lru_cache(maxsize=1024)
def _might_hold_secret_memo(text: str) -> bool:
    return _anchored(text.lower())


def mask_secrets(text: str) -> str:
    """`text` with every credential value it recognises replaced by `****` (see the module
    docstring). Never raises on any string; masking a masked text changes nothing."""
    if not text or not might_hold_secret(text):
        return text
    low = text.lower()
    present = {word for word in _PASS_WORDS if word in low}
    for needed, gate, substitute in _PASSES:
        # `gate`: characters (one of each group) that the pass's pattern cannot match without,
        # looked for in the text as it is now: a pass that cannot match is not run.
        if not present.isdisjoint(needed) and all(any(c in text for c in group) for group in gate):
            text = substitute(text)
    return text


def _sub(pattern: re.Pattern[str], build: Callable[[re.Match[str]], str]) -> Callable[[str], str]:
    return lambda text: pattern.sub(build, text)


def _quoted_mask(value: str) -> str:
    """`****` in the quotes `value` had (`"x"` -> `"****"`, `\\"x\\"` -> `\\"****\\"`)."""
    if value.startswith('\\"'):
        return f'\\"{MASK}\\"'
    if value[:1] in ("'", '"') and len(value) >= 2:
        return f"{value[0]}{MASK}{value[0]}"
    return MASK


def _is_masked(value: str) -> bool:
    return value.strip("\\'\"") in (MASK, "")


_NOT_SECRETS = frozenset({"true", "false", "null", "none", "yes", "no", "<na>"})


def _keyed(match: re.Match[str]) -> str:
    q, key, v1, v2 = match.group("q", "key", "v1", "v2")
    value = v1 if v1 is not None else v2
    if not _is_key(key, bool(q)):
        if "=" in value or ":" in value:  # `opts=password=x`: the value may hold pairs of its own
            start = match.start("v1" if v1 is not None else "v2") - match.start()
            return match.group(0)[:start] + _KEYED.sub(_keyed, value)
        return match.group(0)
    if _is_masked(value) or value.strip("\\'\"").lower() in _NOT_SECRETS:
        return match.group(0)
    sep = match.group("eq") if v1 is not None else match.group("colon")
    return f"{q}{key}{q}{sep}{_quoted_mask(value)}"


def _flag_space(match: re.Match[str]) -> str:
    value = match.group("value")
    if _is_masked(value) or value.startswith("-") or not _is_flag_key(match.group("key")):
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{_quoted_mask(value)}"


def _header(match: re.Match[str]) -> str:
    value = match.group("value")
    if _is_masked(value):
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{match.group('scheme') or ''}{_quoted_mask(value)}"


def _scheme(match: re.Match[str]) -> str:
    value = match.group("value")
    if value == MASK or value.lower() in ("bearer", "basic", "token"):
        return match.group(0)
    return f"{match.group('scheme')} {MASK}"


def _prefixed(match: re.Match[str]) -> str:
    value = match.group("value")
    return match.group(0) if _is_masked(value) else f"{match.group('pre')}{_quoted_mask(value)}"


def _userinfo(match: re.Match[str]) -> str:
    return f"{match.group('pre')}{MASK}@"


def _query(match: re.Match[str]) -> str:
    return "?" + mask_query(match.group("query"))


def mask_query(query: str) -> str:
    """A URL query with credentials masked: credential-named parameters, and the `command=`
    parameters of an exec or attach taken together as one command (kubectl sends each argument
    as one parameter, spaces as `+`, anything else percent-encoded). Parameters left as they
    were keep their encoding; masked ones are re-encoded (`+` for spaces, `****` kept)."""
    pairs = [part.partition("=") for part in query.split("&")]
    decoded = [(unquote_plus(key), unquote_plus(value)) for key, _eq, value in pairs]
    commands = [index for index, (key, _value) in enumerate(decoded) if key == "command"]
    masked_args = mask_argv([decoded[index][1] for index in commands]) if commands else []
    masked = dict(zip(commands, masked_args, strict=True))
    out = []
    for index, (key, equals, raw) in enumerate(pairs):
        name, value = decoded[index]
        new = masked[index] if index in masked else (
            _masked_word(value) if equals and is_credential_name(name) else mask_secrets(value))
        encoded = raw if new == value else quote_plus(new, safe="*/", errors="backslashreplace")
        out.append(f"{key}{equals}{encoded}")
    return "&".join(out)


_BLANKS = re.compile(r"(\s+)")


def _command(match: re.Match[str]) -> str:
    args = match.group("args")
    words = args.split()
    everything = [match.group("tool"), *words]  # each word was masked alone by the passes before
    masked = _mask_context(everything, list(everything))[1:]
    if masked == words:
        return match.group(0)
    whole = match.group(0)
    if args == " " + " ".join(words):  # single spaces, as a command is mostly written
        return whole[: len(whole) - len(args)] + " " + " ".join(masked)
    pieces = _BLANKS.split(args)
    it = iter(masked)
    rebuilt = "".join(next(it) if piece and not piece.isspace() else piece for piece in pieces)
    return match.group(0)[: len(match.group(0)) - len(args)] + rebuilt


# Each pass, with the lowercase substrings one of which it needs, and the characters its pattern
# needs (one of each group: `=` or `:` after a key, a blank before a flag's value).
_BLANK = (" ", "\t")
_PASSES: tuple[tuple[frozenset[str], tuple[tuple[str, ...], ...], Callable[[str], str]], ...] = tuple(
    (frozenset(words), gate, sub) for words, gate, sub in (
        (("?",), (("=",),), _sub(_QUERY, _query)),
        (("://",), (("@",),), _sub(_USERINFO, _userinfo)),
        (("authorization", "cookie", "x-api-key", "x-auth-token"), ((":", "="),), _sub(_HEADER, _header)),
        (("bearer", "basic", "token", "negotiate", "digest"), (_BLANK,), _sub(_SCHEME, _scheme)),
        (("--from-literal",), (("=",),), _sub(_LITERAL, _prefixed)),
        (("pass:",), (), _sub(_PASS_PHRASE, _prefixed)),
        (_KEY_WORDS, (("=", ":"),), _sub(_KEYED, _keyed)),
        (_KEY_WORDS, (("-",), _BLANK), _sub(_FLAG_SPACE, _flag_space)),
        (_TOOL_HINTS, (_BLANK,), _sub(_COMMAND, _command)),
    ))
_PASS_WORDS = frozenset(word for needed, _gate, _substitute in _PASSES for word in needed)
