"""Credentials masked out of everything sera records or sends.

A command's output, a file the agent views or a test log may hold a private key or a token
(a repository's fixture, a prompt-injected `cat ~/.ssh/id_rsa`). What enters a trajectory is saved,
trained on and, with a server as teacher, sent away, so `mask_secrets` replaces the shapes below with
a marker that names the kind: `Trajectory.add` masks every message that is not the model's own, and
the OpenAI-compatible backend masks every message before it leaves the machine.

Only distinctive shapes are masked (a prefix a provider reserves, PEM armour, `password=`-style
assignments with a literal value), so ordinary code stays as it is.
"""

from __future__ import annotations

import re

MASK = "[sera: {} masked]"

PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("private key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)", re.DOTALL)),
    ("AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})")),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("API key", re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}")),
    ("Stripe key", re.compile(r"\b[rs]k_live_[A-Za-z0-9]{20,}")),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")),
    ("password in a URL", re.compile(r"(?<=://)[^\s/:@]+:[^\s/@]+(?=@)")),
    ("netrc password", re.compile(r"(?P<keep>\bmachine\s+\S+(?:\s+login\s+\S+)?\s+password\s+)\S+")),
]
# `aws_secret_access_key = ...`, `PASSWORD: "..."`, `api_token="..."`: the value after a secret's name
ASSIGNMENT = re.compile(
    r"(?P<name>\b[\w.-]*(?:secret|password|passwd|token|api_?key|access_?key|credential)s?[\w.-]*"
    r"[\"']?[ \t]*[:=][ \t]*)(?P<quote>[\"']?)(?P<value>[^\s\"',;]{8,})(?P=quote)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """`text` with every credential-shaped part replaced by a marker naming its kind."""
    if not text:
        return text
    for kind, pattern in PATTERNS:
        keep = r"\g<keep>" if "keep" in pattern.groupindex else ""
        text = pattern.sub(keep + MASK.format(kind).replace("\\", "\\\\"), text)
    return ASSIGNMENT.sub(_mask_assignment, text)


def _mask_assignment(match: re.Match[str]) -> str:
    value, quote = match.group("value"), match.group("quote")
    if value.startswith("[sera:") or _looks_like_code(value):
        return match.group(0)
    return f"{match.group('name')}{quote}{MASK.format('secret')}{quote}"


def _looks_like_code(value: str) -> bool:
    """Not a credential: an expression (`token = self.next_token()`, `password=os.environ[...]`,
    `secret = default_secret`) or a word without digits (`api_key_header = "X-API-Key"`, a
    pattern); credentials mix letters and digits."""
    if re.search(r"[()\[\]{}]", value):
        return True
    return not (re.search(r"\d", value) and re.search(r"[A-Za-z]", value))
