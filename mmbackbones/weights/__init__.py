# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Pretrained weights in one line: ``checkpoint='mmbackbones://<family>/<arch>'``.

``backbone=dict(type='VoVNet', arch='V-39-eSE', init_cfg=dict(type='Pretrained',
checkpoint='mmbackbones://vovnet/V-39-eSE'))`` downloads the publisher's file once, checks it,
converts it and caches both. The same names work in mmengine (``load_from='mmbackbones://...'``,
``tools/test.py CONFIG mmbackbones://...``: the weights come as a detector checkpoint with
``backbone.`` keys).

Environment:
    MMBACKBONES_CACHE: the cache directory (default ``~/.cache/mmbackbones/weights``).
    MMBACKBONES_OFFLINE=1: never download; a missing file is an error naming its URL and the
        exact path to put it at (``tools/fetch_weights.py`` fills a cache on a machine with
        internet access).
    MMBACKBONES_WEIGHTS_MIRROR: download ``<mirror>/<file>`` instead of the published URL (a
        proxy, or a copy of a cache's ``downloads/`` folder served over HTTP or ``file://``).
    MMBACKBONES_DOWNLOAD_TIMEOUT: seconds without progress before a download is abandoned.
"""
from .cache import CACHE_ENV, IntegrityError, cache_dir
from .download import OFFLINE_ENV, DownloadError
from .registry import MIRROR_ENV, SCHEME, WeightEntry, entries, get, is_named, names_for, override
from .store import (WeightsNotAvailable, check_backbone, converted_state, fetch, fetch_url,
                    load_from_mmbackbones, load_named, register_mmengine_scheme)

register_mmengine_scheme()

__all__ = ['SCHEME', 'CACHE_ENV', 'OFFLINE_ENV', 'MIRROR_ENV', 'IntegrityError', 'DownloadError',
           'WeightsNotAvailable', 'WeightEntry', 'cache_dir', 'entries', 'get', 'is_named',
           'names_for', 'override', 'fetch', 'fetch_url', 'converted_state', 'check_backbone',
           'load_named', 'load_from_mmbackbones', 'register_mmengine_scheme']
