"""The environment is locked: constraints.txt pins every distribution callpulse pulls in (transitive ones
too), scripts/setup.sh installs through it and re-installs when it changes, and the running environment
is the locked one (issue 15: greedy int8 decoding differs between library builds)."""
from __future__ import annotations

import importlib.metadata
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from support import ROOT

LOCK = ROOT / "constraints.txt"


def pins() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert m, f"constraints.txt line {line!r} is not NAME==VERSION"
        out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def required_distributions(root: str = "callpulse", extras: tuple[str, ...] = ("test",)) -> set[str]:
    """Every distribution that installing ``root[extras]`` brings in, following installed metadata."""
    seen: set[str] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed: reported by test_the_running_environment_is_the_locked_one
        for raw in requirements:
            req = Requirement(raw)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            key = canonicalize_name(req.name)
            if key in seen:
                continue
            seen.add(key)
            todo.append((req.name, tuple(req.extras)))
    return seen


def test_the_lock_file_pins_every_transitive_dependency():
    locked = pins()
    missing = sorted(required_distributions() - set(locked))
    assert not missing, f"not pinned in constraints.txt: {missing}; run scripts/lock.sh"


def test_the_running_environment_is_the_locked_one():
    locked = pins()
    drift = []
    for name in sorted(required_distributions()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            drift.append(f"{name} not installed (locked {locked.get(name)})")
            continue
        if name in locked and locked[name] != installed:
            drift.append(f"{name} {installed} (locked {locked[name]})")
    assert not drift, f"installed versions differ from constraints.txt: {drift}; run scripts/setup.sh"


def test_the_lock_file_does_not_pin_the_project_itself():
    assert "callpulse" not in pins()


def test_setup_installs_through_the_lock_and_reinstalls_when_it_changes():
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    installs = [line for line in setup.splitlines() if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs and all("-c constraints.txt" in line for line in installs)
    stamp = next(line for line in setup.splitlines() if line.strip().startswith("want="))
    assert "constraints.txt" in stamp and "setup.cfg" in stamp
    assert (ROOT / "scripts" / "lock.sh").is_file()
