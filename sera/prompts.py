"""Prompt templates live as text files in a package's templates/ folder; this renders them strictly.

`render_from("sera.specialize", "issue", ...)` (any package's templates; `sera.agent.prompts.render`
is the agent's shorthand) fails loudly when the template names a value the caller did not give (a typo in the
template) or the caller gives a value the template never uses (a typo in the call).
"""

from __future__ import annotations

import string
from functools import cache
from importlib import resources


@cache
def _template(package: str, name: str) -> string.Template:
    text = resources.files(package).joinpath(f"templates/{name}.txt").read_text("utf-8")
    return string.Template(text)


def render_from(package: str, name: str, **values: str) -> str:
    template = _template(package, name)
    wanted = set(template.get_identifiers())
    unused = set(values) - wanted
    if unused:
        raise KeyError(f"template {name}.txt does not use {sorted(unused)}; it takes {sorted(wanted)}")
    return template.substitute(values).strip()

