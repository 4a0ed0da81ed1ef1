# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Installing the package into an environment that already has torch / mmcv / mmdet.

``pyproject.toml`` states compatible ranges; ``requirements/constraints.txt`` the exact versions
CI runs. Both checks are offline: pip resolves against what is installed (``--no-index``).
"""
import json
import subprocess
import sys

import pytest

from tests.paths import REPO

tomllib = pytest.importorskip('tomllib')  # Python >= 3.11 (CI runs 3.11)

try:
    from packaging.requirements import Requirement
except ImportError:  # pragma: no cover - pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement


def _name(req: Requirement) -> str:
    return req.name.lower().replace('_', '-')


def declared_requirements() -> list:
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    reqs = list(project['dependencies'])
    for extra in project.get('optional-dependencies', {}).values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def constraints() -> dict:
    pins = {}
    for line in (REPO / 'requirements' / 'constraints.txt').read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[_name(req)] = req
    return pins


def test_ci_pins_lie_inside_the_supported_ranges():
    pins = constraints()
    declared = declared_requirements()
    assert declared, 'pyproject.toml declares no dependencies'
    for req in declared:
        assert _name(req) in pins, f'{req.name} has no pin in requirements/constraints.txt'
        pin = pins[_name(req)]
        exact = [s.version for s in pin.specifier if s.operator == '==']
        for version in exact:
            assert req.specifier.contains(version, prereleases=True), (
                f'requirements/constraints.txt pins {req.name}=={version}, outside the range '
                f'{req.specifier} pyproject.toml supports')
    # the install requirements are ranges, never exact pins (they would replace a user's torch)
    project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
    for line in project['dependencies']:
        assert '==' not in line, f'pyproject.toml pins {line!r}; give a compatible range'


def test_installing_into_the_environment_changes_nothing_but_mmbackbones(tmp_path):
    """What ``pip install <repo>`` would do here, with dependency resolution, offline."""
    report = tmp_path / 'report.json'
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--no-build-isolation',
         '--disable-pip-version-check', '--quiet', '--report', str(report), str(REPO)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, (
        f'pip cannot resolve the package against the installed versions:\n{proc.stderr[-4000:]}')
    installs = json.loads(report.read_text())['install']
    names = sorted(item['metadata']['name'].lower() for item in installs)
    assert names == ['mmbackbones'], (
        f'installing mmbackbones would also install or replace {names}: '
        + ', '.join(f"{i['metadata']['name']} {i['metadata']['version']}" for i in installs))

