"""Topic templates: how MQTT topics map to assets and signals.

A template names the levels of a topic in the Unified Namespace style, for example
``plant/{site}/{line}/{asset}/{signal}``. It is compiled once from config into the MQTT
subscription filter (``plant/+/+/+/+``) and a matcher that returns the named levels of a topic,
so the network thread does one split and a few string compares per message.

Examples
--------
>>> t = TopicTemplate.compile("plant/{site}/{line}/{asset}/{signal}")
>>> t.filter
'plant/+/+/+/+'
>>> t.match("plant/berlin/l2/press-4/force")
{'site': 'berlin', 'line': 'l2', 'asset': 'press-4', 'signal': 'force'}
>>> t.match("plant/berlin/l2/press-4") is None
True
>>> TopicTemplate.compile("$share/agents/plant/{asset}/{signal}").filter
'$share/agents/plant/+/+'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["TopicTemplate"]

_FIELD = re.compile(r"^\{([a-z][a-z0-9_]{0,31})\}$")
_MAX_LEVELS = 32


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A compiled topic template; build with :meth:`compile`."""

    template: str
    filter: str
    levels: tuple[str | None, ...]  # the fixed text of each level, None for a named field
    fields: tuple[str | None, ...]  # the field name of each level, None for fixed text

    @classmethod
    def compile(cls, template: str, *, required: tuple[str, ...] = ()) -> TopicTemplate:
        """Validate and compile; ``required`` fields must appear (e.g. asset and signal)."""
        if not isinstance(template, str) or not template:
            raise ValueError("a topic template must be a non-empty string")
        parts = template.split("/")
        # MQTT 5 shared subscriptions ($share/group/...) are delivered under the plain topic.
        share = ""
        if parts[0] == "$share":
            if len(parts) < 3 or not parts[1] or any(c in parts[1] for c in "+#{}"):
                raise ValueError(f"{template!r}: a shared subscription is $share/GROUP/topic...")
            share, parts = f"$share/{parts[1]}/", parts[2:]
        if len(parts) > _MAX_LEVELS:
            raise ValueError(f"a topic template may have at most {_MAX_LEVELS} levels")
        levels: list[str | None] = []
        fields: list[str | None] = []
        for i, part in enumerate(parts):
            m = _FIELD.match(part)
            if m:
                name = m.group(1)
                if name in fields:
                    raise ValueError(f"field {{{name}}} appears twice in {template!r}")
                levels.append(None)
                fields.append(name)
                continue
            if "{" in part or "}" in part:
                raise ValueError(f"level {i + 1} {part!r} of {template!r}: a field is a whole "
                                 "level like {asset}, lower-case letters, digits and _")
            if "+" in part or "#" in part:
                raise ValueError(f"level {i + 1} {part!r} of {template!r}: use a named field "
                                 "like {line} instead of MQTT wildcards")
            if "\x00" in part:
                raise ValueError("a topic template may not contain NUL")
            levels.append(part)
            fields.append(None)
        for name in required:
            if name not in fields:
                raise ValueError(f"{template!r} needs a {{{name}}} level (or a fixed {name} "
                                 "in the subscription)")
        mqtt_filter = share + "/".join("+" if lv is None else lv for lv in levels)
        if levels[0] is not None and levels[0].startswith("$"):
            raise ValueError(f"{template!r}: topics starting with $ are the broker's own")
        return cls(template, mqtt_filter, tuple(levels), tuple(fields))

    def match(self, topic: str) -> dict[str, str] | None:
        """The named levels of ``topic``, or ``None`` if it does not fit the template."""
        parts = topic.split("/")
        if len(parts) != len(self.levels):
            return None
        out: dict[str, str] = {}
        for part, level, name in zip(parts, self.levels, self.fields, strict=True):
            if level is None:
                if not part:
                    return None  # an empty level is no name
                out[name] = part  # type: ignore[index]
            elif part != level:
                return None
        return out
