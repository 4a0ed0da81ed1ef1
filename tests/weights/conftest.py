# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Fixtures for the named-weights tests: an empty cache, a loopback server standing in for the
publishers (``MMBACKBONES_WEIGHTS_MIRROR`` points at it), and official-format files built from
the official test vectors in ``tests/data/official``."""
import io
import json
from pathlib import Path
from typing import Dict

import pytest
import torch

from tests.loopback import LoopbackServer
from tests.paths import REPO

VECTORS = REPO / 'tests' / 'data' / 'official'


def load_vector(name: str) -> Dict:
    vector = torch.load(VECTORS / f'{name}.pt', weights_only=True)
    vector['config'] = json.loads((VECTORS / f'{name}.json').read_text())
    return vector


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty weights cache; downloads on, no mirror, short timeouts."""
    root = tmp_path / 'cache'
    monkeypatch.setenv('MMBACKBONES_CACHE', str(root))
    monkeypatch.delenv('MMBACKBONES_OFFLINE', raising=False)
    monkeypatch.delenv('MMBACKBONES_WEIGHTS_MIRROR', raising=False)
    monkeypatch.setenv('MMBACKBONES_DOWNLOAD_TIMEOUT', '10')
    return root


@pytest.fixture
def server(cache, monkeypatch):
    """A loopback server acting as the mirror of every publisher: it serves ``/<file>``."""
    with LoopbackServer(timeout=10) as srv:
        monkeypatch.setenv('MMBACKBONES_WEIGHTS_MIRROR', srv.url(''))
        yield srv


@pytest.fixture(scope='session')
def vovnet_vector() -> Dict:
    vector = load_vector('vovnet_tiny_spec')
    vector['arch'] = dict(vector['config']['spec'], identity=True)  # our name for the layout
    return vector


@pytest.fixture(scope='session')
def vanillanet_vector() -> Dict:
    vector = load_vector('vanillanet_tiny')
    cfg = vector['config']
    vector['arch'] = dict(dims=cfg['dims'], strides=cfg['strides'], act_num=cfg['act_num'])
    return vector


@pytest.fixture(scope='session')
def moganet_vector() -> Dict:
    vector = load_vector('moganet_tiny_arch')
    vector['arch'] = vector['config']['arch']
    return vector
