"""The replicas' Prometheus texts as one: each metric family once, every sample labelled
with the replica it came from, so a scraper of the single address sees each replica."""
from __future__ import annotations

import re

_FAMILY_COMMENT = re.compile(r"# (?:HELP|TYPE) (\S+)")
REPLICA_LABEL = "replica"


def _label(sample: str, replica: str) -> str:
    """`name{a="1"} 3` -> `name{a="1",replica="r"} 3`; `name 3` -> `name{replica="r"} 3`."""
    tag = f'{REPLICA_LABEL}="{replica}"'
    brace = sample.find("{")
    space = sample.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        close = sample.index("}", brace)
        inner = sample[brace + 1:close]
        joined = f"{inner},{tag}" if inner.strip() else tag
        return f"{sample[:brace]}{{{joined}}}{sample[close + 1:]}"
    return f"{sample[:space]}{{{tag}}}{sample[space:]}"


def _families(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """family name -> (its HELP/TYPE lines, its samples), in the order they appear."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    current = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _FAMILY_COMMENT.match(line)
        if match:
            current = match.group(1)
            comments, _ = families.setdefault(current, ([], []))
            if line not in comments:
                comments.append(line)
        elif line.startswith("#"):
            continue
        else:
            families.setdefault(current, ([], []))[1].append(line)
    return families


def merge_metrics(texts: dict[str, str]) -> str:
    """texts: replica id -> that replica's /metrics text."""
    merged: dict[str, tuple[list[str], list[str]]] = {}
    for replica, text in texts.items():
        for name, (comments, samples) in _families(text).items():
            into = merged.setdefault(name, (list(comments), []))
            into[1].extend(_label(s, replica) for s in samples)
    lines: list[str] = []
    for comments, samples in merged.values():
        lines += comments + samples
    return "\n".join(lines) + "\n"
