# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""The ``Example:`` of every backbone docstring runs as a doctest and prints what it shows.

Each family's example builds a named variant and prints the output shapes for a small input;
``BaseBackbone`` shows the input checks, ``arch_schema`` the schema messages. A new backbone
module is picked up from the package (every module of ``mmbackbones.models.backbones``) and must
carry at least one example.
"""
import doctest
import importlib
import pkgutil

import pytest
import torch

import mmbackbones.models.backbones as backbones_pkg

MODULES = sorted(f'{backbones_pkg.__name__}.{m.name}'
                 for m in pkgutil.iter_modules(backbones_pkg.__path__))


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f'{name} has no doctest example'
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for test in tests:
            runner.run(test)
    finally:
        torch.set_num_threads(threads)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f'{result.failed} of {result.attempted} examples of {name} failed'
