"""Prompt templates live as text files in templates/; this renders them strictly.

`render("system", tools=...)` fails loudly when the template names a value the caller did not give
(a typo in the template) or the caller gives a value the template never uses (a typo in the call).
"""

from __future__ import annotations

import string
from functools import cache
from importlib import resources


@cache
def _template(name: str) -> string.Template:
    text = resources.files("sera.agent").joinpath(f"templates/{name}.txt").read_text("utf-8")
    return string.Template(text)


def render(name: str, **values: str) -> str:
    template = _template(name)
    wanted = set(template.get_identifiers())
    unused = set(values) - wanted
    if unused:
        raise KeyError(f"template {name}.txt does not use {sorted(unused)}; it takes {sorted(wanted)}")
    return template.substitute(values).strip()
