"""User templates of the webhook body and the Slack text: `${name}` placeholders, `$$` for a
literal `$`.

Names are alert keys (`id`, `time`, `rule`, `priority`, `output`, `message`, `source`,
`hostname`, `audit_id`, `tags`), `json` (the whole Falco JSON object) or an output field
(`${ka.user.name}`). A missing value renders as `<NA>`, as in rule outputs. With `escape="json"`
every value is escaped to sit inside a JSON string (`{"text": "${output}"}`) except `${json}`,
which is inserted as an object; with `escape="slack"` every value has Slack's `&`, `<`, `>`
escaped (so event data cannot mention `@channel` or forge a link), while the template's own
text may use Slack's markup. Templates only look values up: they cannot run code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from detector.alert.model import Alert

_TOKEN = re.compile(r"\$(?:\{(?P<name>[^{}\s]+)\}|(?P<dollar>\$)|(?P<bad>))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-\[\]/()]*")
NA = "<NA>"


class TemplateError(ValueError):
    """A template does not parse; the message names the column."""


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """A compiled template: literal and placeholder parts."""

    parts: tuple[str | tuple[str], ...]
    escape: str  # "json" | "slack" | "none"

    def render(self, alert: Alert) -> str:
        data = alert.to_dict()
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name = part[0]
            if name == "json":
                text = orjson.dumps(data).decode()
                out.append(text if self.escape == "json" else _ESCAPES[self.escape](text))
                continue
            text = _text(data[name] if name in data and name != "output_fields" else alert.output_fields.get(name))
            out.append(_ESCAPES[self.escape](text))
        return "".join(out)


def compile_template(text: str, escape: str = "none") -> BodyTemplate:
    """Parse `text`; raises TemplateError for `$` not followed by `{name}` or `$`."""
    parts: list[str | tuple[str]] = []
    pos = 0
    for token in _TOKEN.finditer(text):
        parts.append(text[pos:token.start()])
        pos = token.end()
        if token.group("dollar"):
            parts.append("$")
            continue
        name = token.group("name")
        if name is None or not _NAME.fullmatch(name):
            raise TemplateError(f"column {token.start() + 1}: expected ${{name}} or $$")
        parts.append((name,))
    parts.append(text[pos:])
    return BodyTemplate(tuple(p for p in parts if p != ""), escape)


def escape_for(content_type: str) -> str:
    """How template values are escaped in a body of this content type."""
    return "json" if "json" in content_type.lower() else "none"


def slack_escape(text: str) -> str:
    """Slack's three control characters as entities (this also defuses `<!channel>` mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_ESCAPES: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "json": lambda text: orjson.dumps(text).decode()[1:-1],
    "slack": slack_escape,
}


def _text(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)
