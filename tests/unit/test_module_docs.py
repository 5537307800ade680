"""The modules in library/: their documentation says what their argument_spec accepts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
module_utils = pytest.importorskip("ansible.module_utils")

REPO = Path(__file__).resolve().parent.parent.parent
MODULES = sorted(path.stem for path in (REPO / "library").glob("hako_*.py"))

# As Ansible ships it: the package under ansible.module_utils.
if str(REPO / "module_utils") not in module_utils.__path__:
    module_utils.__path__.append(str(REPO / "module_utils"))


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"hako_library_{name}", REPO / "library" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented(options: dict) -> dict:
    return {
        name: {
            "type": entry.get("type", "str"),
            "required": entry.get("required", False),
            "default": entry.get("default"),
            "choices": entry.get("choices"),
            "aliases": sorted(entry.get("aliases", [])),
            "elements": entry.get("elements"),
            "options": documented(entry["suboptions"]) if "suboptions" in entry else None,
        }
        for name, entry in options.items()
    }


def accepted(spec: dict) -> dict:
    return {
        name: {
            "type": entry.get("type", "str"),
            "required": entry.get("required", False),
            "default": entry.get("default"),
            "choices": entry.get("choices"),
            "aliases": sorted(entry.get("aliases", [])),
            "elements": entry.get("elements"),
            "options": accepted(entry["options"]) if "options" in entry else None,
        }
        for name, entry in spec.items()
    }


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_the_argument_spec(name: str) -> None:
    module = load(name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == name
    spec = accepted(module.argument_spec())
    if name == "hako_containers":
        # Documented as "every option of hako_container"; checked against it below.
        spec["containers"]["options"] = None
    assert documented(doc["options"]) == spec


@pytest.mark.parametrize("name", MODULES)
def test_examples_and_return_are_yaml_and_use_the_module(name: str) -> None:
    module = load(name)
    examples = yaml.safe_load(module.EXAMPLES)
    assert examples and all(name in task for task in examples if "ansible.builtin.assert" not in task)
    assert isinstance(yaml.safe_load(module.RETURN), dict)


def test_each_item_of_hako_containers_takes_the_options_of_hako_container() -> None:
    single = load("hako_container").argument_spec()
    item = load("hako_containers").container_spec()
    # The list's own state and force_kill apply to items that set none.
    assert single.pop("state")["default"] == "started" and single.pop("force_kill")["default"] is False
    assert item.pop("state").get("default") is None and item.pop("force_kill").get("default") is None
    assert item == single
