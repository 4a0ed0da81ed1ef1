# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""URL checkpoints: downloaded with bounds into torch.hub's cache, then loaded weights-only;
every MMEngine scheme that resolves to a URL goes the same way."""
import socket
import threading
import time

import pytest
import torch
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as mm_checkpoint

import mmbackbones  # noqa: F401
from mmbackbones.engine import checkpoint as ckpt_mod
from mmbackbones.engine.checkpoint import (CheckpointDownloadError, download_checkpoint,
                                           load_from_http_weights_only,
                                           load_from_local_weights_only)
from tests.loopback import LoopbackServer


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    hub = tmp_path / 'hub'
    monkeypatch.setattr(torch.hub, '_hub_dir', str(hub))
    return hub / 'checkpoints'


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp('w') / 'w.pth'
    torch.save({'state_dict': {'backbone.w': torch.arange(6.)}}, path)
    return path.read_bytes()


def test_every_mmengine_scheme_uses_our_loaders():
    for prefix, ours in ckpt_mod.SCHEMES:
        for p in prefix:
            assert CheckpointLoader._schemes[p] is ours, p
    for path in ('http://h/x.pth', 'https://h/x.pth', 'torchvision://resnet50',
                 'modelzoo://resnet50', 'open-mmlab://x', 'openmmlab://x', 'mmcls://x',
                 's3://b/x.pth', 'petrel://b/x.pth', 'pavi://x', 'work_dirs/x.pth'):
        loader = CheckpointLoader._get_checkpoint_loader(path)
        assert loader.__name__.endswith('_weights_only'), (path, loader)
    assert CheckpointLoader._get_checkpoint_loader('x.pth') is load_from_local_weights_only


@pytest.mark.parametrize('scheme', ['http', 'torchvision://', 'modelzoo://', 'open-mmlab://',
                                    'openmmlab://', 'mmcls://'])
def test_url_schemes_download_then_load(scheme, weights, hub_dir, monkeypatch):
    with LoopbackServer({'/m/w-1234.pth': weights}) as srv:
        url = srv.url('/m/w-1234.pth')
        for table in ('get_torchvision_models', 'get_external_models', 'get_mmcls_models'):
            monkeypatch.setattr(mm_checkpoint, table, lambda: {'good': url})
        target = url if scheme == 'http' else f'{scheme}good'
        loaded = CheckpointLoader.load_checkpoint(target, map_location='cpu')
        again = CheckpointLoader.load_checkpoint(target, map_location='cpu')
        assert srv.requests == ['/m/w-1234.pth']  # the second load reads the cache
    state = loaded['state_dict']
    key = 'w' if scheme == 'mmcls://' else 'backbone.w'  # mmcls keeps backbone keys, unprefixed
    assert torch.equal(state[key], torch.arange(6.))
    assert torch.equal(again['state_dict'][key], torch.arange(6.))
    assert sorted(p.name for p in hub_dir.iterdir()) == ['w-1234.pth']


def test_openmmlab_local_table_entry_is_loaded_weights_only(weights, tmp_path, monkeypatch):
    home = tmp_path / 'mmengine_home'
    (home / 'sub').mkdir(parents=True)
    (home / 'sub' / 'w.pth').write_bytes(weights)
    monkeypatch.setattr(mm_checkpoint, 'get_external_models', lambda: {'local': 'sub/w.pth'})
    monkeypatch.setattr(mm_checkpoint, '_get_mmengine_home', lambda: str(home))
    loaded = CheckpointLoader.load_checkpoint('open-mmlab://local')
    assert torch.equal(loaded['state_dict']['backbone.w'], torch.arange(6.))


def test_unknown_model_name_lists_close_names(monkeypatch):
    monkeypatch.setattr(mm_checkpoint, 'get_torchvision_models',
                        lambda: {'resnet50': 'http://127.0.0.1:9/x.pth'})
    with pytest.raises(KeyError, match='torchvision://resnet5: no such model.*resnet50'):
        CheckpointLoader.load_checkpoint('torchvision://resnet5')


@pytest.mark.parametrize('fault', ['truncated', '404', '500'])
def test_failed_downloads_leave_no_file(fault, weights, hub_dir):
    with LoopbackServer({'/w.pth': weights}) as srv:
        if fault == 'truncated':
            srv.truncate['/w.pth'] = len(weights) // 2
        else:
            srv.status['/w.pth'] = int(fault)
        url = srv.url('/w.pth')
        with pytest.raises(CheckpointDownloadError) as info:
            load_from_http_weights_only(url)
    assert url in str(info.value)
    assert ('announced' in str(info.value) or 'IncompleteRead' in str(info.value)) \
        if fault == 'truncated' else f'HTTP {fault}' in str(info.value)
    assert not hub_dir.exists() or not list(hub_dir.iterdir())


def test_redirect_is_followed(weights, hub_dir):
    with LoopbackServer({'/real.pth': weights}) as srv:
        srv.redirects['/alias.pth'] = srv.url('/real.pth')
        loaded = load_from_http_weights_only(srv.url('/alias.pth'))
    assert torch.equal(loaded['state_dict']['backbone.w'], torch.arange(6.))


def test_size_limit(weights, hub_dir):
    with LoopbackServer({'/w.pth': weights}) as srv:
        with pytest.raises(CheckpointDownloadError, match='more than the limit of 100'):
            download_checkpoint(srv.url('/w.pth'), max_bytes=100)
    assert not hub_dir.exists() or not list(hub_dir.iterdir())


def test_stalled_server_times_out(hub_dir):
    """A server that accepts and never answers: the download fails after the timeout."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    held = []
    thread = threading.Thread(target=lambda: held.append(listener.accept()), daemon=True)
    thread.start()
    start = time.monotonic()
    try:
        with pytest.raises(CheckpointDownloadError, match='timed out'):
            download_checkpoint(f'http://127.0.0.1:{port}/w.pth', timeout=0.5)
    finally:
        listener.close()
        for conn, _ in held:
            conn.close()
    assert time.monotonic() - start < 10
    assert not hub_dir.exists() or not list(hub_dir.iterdir())


def test_non_http_urls_are_refused(hub_dir):
    with pytest.raises(CheckpointDownloadError, match="scheme 'file'"):
        download_checkpoint('file:///etc/passwd')


@pytest.mark.parametrize('prefix', ['s3://bucket/', 'petrel://bucket/', 'open-mmlab:s3://b/'])
def test_object_store_schemes_load_weights_only(prefix, weights, tmp_path, monkeypatch):
    """s3:// / petrel:// fetch bytes through MMEngine's file backend; they are loaded with the
    same checks (hostile bytes refused, good bytes loaded)."""
    import mmengine.fileio
    from mmbackbones.engine.checkpoint import UnsafeCheckpointError
    from tests.security.payloads import ATTACKS
    files = {f'{prefix}good.pth': weights,
             f'{prefix}evil.pth': ATTACKS['rce_system'][0](tmp_path)}

    class Backend:
        def get(self, filepath):
            return files[filepath]

    monkeypatch.setattr(mmengine.fileio, 'get_file_backend', lambda *a, **k: Backend())
    loaded = CheckpointLoader.load_checkpoint(f'{prefix}good.pth')
    assert torch.equal(loaded['state_dict']['backbone.w'], torch.arange(6.))
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        CheckpointLoader.load_checkpoint(f'{prefix}evil.pth')
    assert not (tmp_path / 'pwned').exists()


def test_failed_download_on_rank_0_still_releases_the_other_ranks(hub_dir, monkeypatch):
    """Rank 0 reaches the barrier even when its download fails, then raises: no rank hangs."""
    import mmengine.dist
    from mmbackbones.engine.checkpoint import load_from_http_weights_only
    calls = []
    monkeypatch.setattr(mmengine.dist, 'get_dist_info', lambda: (0, 2))
    monkeypatch.setattr(torch.distributed, 'barrier', lambda: calls.append('barrier'))
    with LoopbackServer() as srv:  # nothing served: HTTP 404
        with pytest.raises(CheckpointDownloadError, match='404'):
            load_from_http_weights_only(srv.url('/missing.pth'))
    assert calls == ['barrier']
