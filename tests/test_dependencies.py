"""pyproject.toml's ranges and requirements.lock agree, and the environment is the locked one."""

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [
    Requirement(text) for text in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]
]


def _locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


LOCKED = _locked()


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=str)
def test_each_dependency_is_locked_within_its_range_and_installed_at_that_version(requirement):
    if requirement.marker is not None and not requirement.marker.evaluate():
        pytest.skip(f"not for this platform: {requirement.marker}")
    pin = LOCKED.get(canonicalize_name(requirement.name))
    assert pin is not None, f"{requirement.name} is not in requirements.lock: run make lock"
    assert requirement.specifier.contains(pin), (
        f"the lock's {requirement.name}=={pin} is outside {requirement}"
    )
    assert Version(metadata.version(requirement.name)) == pin, (
        "the environment is not the locked one: make venv"
    )


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=str)
def test_each_dependency_has_an_upper_bound(requirement):
    assert any(spec.operator in ("<", "<=", "==", "~=") for spec in requirement.specifier), requirement


@pytest.mark.parametrize("name", ["python-socketio", "python-engineio"])
def test_the_libraries_whose_private_methods_the_hub_overrides_stay_within_the_checked_minor(name):
    """hub/transport overrides private methods of these two: a newer minor release may change them."""
    (requirement,) = [r for r in REQUIREMENTS if r.name == name]
    pin = LOCKED[name]
    next_minor = Version(f"{pin.major}.{pin.minor + 1}")
    assert requirement.specifier.contains(pin)
    assert not requirement.specifier.contains(next_minor), f"{requirement} admits {next_minor}"
