"""The README's first command installs everything the commands shown after it need
(issue 18: `serve api_server` failed with "No module named 'litestar'" after it)."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What a README block needs, by a phrase in it -> the extra that provides it
NEEDS = {
    "serve api_server": "serve",
    "serve api_client": "serve",
    "lmdeploy_sdk.server": "serve",
    "lmdeploy_sdk.integrations": "integrations",
    "from openai import": "integrations",
    "convert SRC": "gguf",
    "lite auto_awq": "gguf",
    "serve ray": "ray",
}


def _extras(pyproject: dict) -> dict[str, set[str]]:
    return {name: set(reqs) for name, reqs in pyproject["project"]["optional-dependencies"].items()}


def _expand(extra_names: set[str], extras: dict[str, set[str]]) -> set[str]:
    """The requirements the extras install, self-references (lmdeploy-sdk[x]) followed."""
    out: set[str] = set()
    todo = list(extra_names)
    while todo:
        for req in extras[todo.pop()]:
            inner = re.fullmatch(r"lmdeploy-sdk\[([\w,-]+)\]", req)
            if inner:
                todo.extend(inner.group(1).split(","))
            else:
                out.add(req)
    return out


def _first_command_extras(readme: str) -> set[str]:
    first = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    return set(re.search(r'-e "\.\[([\w,-]+)\]"', first).group(1).split(","))


def test_first_command_installs_what_later_commands_need():
    readme = (ROOT / "README.md").read_text()
    extras = _extras(tomllib.loads((ROOT / "pyproject.toml").read_text()))
    installed = _expand(_first_command_extras(readme), extras)
    test_block = readme.index("**Run the tests**")
    after = readme[readme.index("```", readme.index("```", test_block) + 3) + 3:]  # past the test command
    needed = {extra for phrase, extra in NEEDS.items() if phrase in after}
    assert needed >= {"serve", "integrations", "gguf", "ray"}, "the README no longer shows these commands?"
    for extra in sorted(needed):
        missing = _expand({extra}, extras) - installed
        assert not missing, f"the README's first command does not install {sorted(missing)} (extra {extra!r})"
