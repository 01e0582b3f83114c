"""Subject templates such as ``bars.{symbol}.{timeframe}``.

One template expands over the topology's value lists (adding a pair to ``instruments``
adds its subjects everywhere) and renders per message at publish time from the message's
own fields.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
ANY_TOKEN = "*"
"""Value of a variable known only at run time (``{run_id}``): it matches any one token."""


def placeholders(template: str) -> list[str]:
    """Variable names in order of appearance, each once."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def is_template(text: str) -> bool:
    return _PLACEHOLDER.search(text) is not None


def expand(template: str, values: Mapping[str, Sequence[str] | str]) -> list[str]:
    """Every subject the template can produce. A variable whose value is ``"*"`` becomes a ``*`` token.

    Raises KeyError naming the first variable with no values.
    """
    names = placeholders(template)
    if not names:
        return [template]
    choices: list[Sequence[str]] = []
    for name in names:
        if name not in values:
            raise KeyError(name)
        value = values[name]
        choices.append([ANY_TOKEN] if value == ANY_TOKEN else list(value))
    out = []
    for combo in itertools.product(*choices):
        mapping = dict(zip(names, combo))
        out.append(_PLACEHOLDER.sub(lambda m: mapping[m.group(1)], template))
    return list(dict.fromkeys(out))


def as_pattern(template: str) -> str:
    """The template with each placeholder as ``*``: the widest set of subjects it can produce."""
    return _PLACEHOLDER.sub(ANY_TOKEN, template)


@lru_cache(maxsize=4096)
def compile_renderer(template: str) -> Callable[[Mapping[str, Any]], str]:
    """A fast function filling the template from a mapping (message fields plus extra values)."""
    names = placeholders(template)
    if not names:
        return lambda _fields: template
    fmt = _PLACEHOLDER.sub(lambda m: "{%d}" % names.index(m.group(1)), template)

    def render(fields: Mapping[str, Any]) -> str:
        try:
            return fmt.format(*[fields[n] for n in names])
        except KeyError as exc:
            raise KeyError(f"subject template {template!r} needs a value for {exc.args[0]!r}") from None

    return render
