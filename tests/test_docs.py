"""docs/architecture.md's module map and public API list against the package itself."""
import os
import re

import gpt_keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gpt_keras")


def _section(title: str) -> str:
    with open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_the_module_map_lists_every_module_of_the_package():
    listed = re.findall(r"^\| `([\w/]+\.py)` \|", _section("Module map"), flags=re.M)
    modules = [os.path.relpath(os.path.join(d, f), PACKAGE) for d, _, files in os.walk(PACKAGE)
               for f in files if f.endswith(".py")]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(modules)


def test_the_public_api_list_is_the_lazy_names():
    listed = {}
    for names, module in re.findall(r"^- (.+) — `([\w.]+)`$", _section("Public API"), flags=re.M):
        listed.update({name: module for name in re.findall(r"`(\w+)`", names)})
    assert listed == gpt_keras._LAZY  # pylint: disable=protected-access
