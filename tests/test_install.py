"""Installs are reproducible: the README's install line and CI install from requirements.lock, which
pins every dependency pyproject.toml names within its ranges."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    """Package name (normalized) -> pinned version, for the lines of the lock that apply here."""
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==([^ ;]+)(?: ; (.*))?$", line)
        if match and (match[3] is None or Requirement(f"x; {match[3]}").marker.evaluate()):
            out[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return out


def test_the_lock_pins_every_dependency_within_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    dev = [text for text in extras["dev"] if not text.startswith("tensoregg")]
    wanted = [*project["dependencies"], *extras["test"], *extras["serve"], *extras["torch"], *dev]
    locked = pins()
    for text in wanted:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in locked, f"{name} is not in requirements.lock (run bash .ci/lock)"
        assert requirement.specifier.contains(locked[name]), f"{name}=={locked[name]} is outside {text!r}"


def test_readme_and_ci_install_from_the_lock():
    install = (ROOT / "README.md").read_text().split("```bash\n")[1].splitlines()[0]
    assert "-c requirements.lock" in install
    assert "requirements.lock" in (ROOT / ".ci" / "run").read_text()
