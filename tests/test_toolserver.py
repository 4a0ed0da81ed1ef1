# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""tests/toolserver.py against the real thing: each script run by a new interpreter and by the
server gives the same exit status, stdout and stderr; nothing carries over between calls."""
import signal
import subprocess
import sys

import pytest

from tests.toolserver import ToolServer

SCRIPTS = {
    'ok': 'import sys\nprint("out", sys.argv[1:])\nprint("err", file=sys.stderr)\n',
    'exit_code': 'import sys\nprint("before")\nsys.exit(3)\n',
    'exit_message': 'raise SystemExit("bad thing")\n',
    'exception': 'def f():\n    raise ValueError("boom")\n\n\nf()\n',
    'argparse_error': ('import argparse\np = argparse.ArgumentParser()\np.add_argument("n", '
                       'type=int)\np.parse_args()\n'),
    'killed': 'import os, signal\nprint("x", flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n',
    'atexit': 'import atexit\natexit.register(lambda: print("at exit"))\nprint("main")\n',
    'fd_level': 'import os\nos.write(1, b"fd1\\n")\nos.write(2, b"fd2\\n")\n',
    'stdin': 'import sys\nprint(repr(sys.stdin.read()))\n',
    'state': ('import json\nimport sys\nsys.modules["json"].CALLS = getattr(json, "CALLS", 0) + 1\n'
              'print(json.CALLS, __name__, sys.path[0] == __file__.rsplit("/", 1)[0])\n'),
}


@pytest.fixture(scope='module')
def scripts(tmp_path_factory):
    root = tmp_path_factory.mktemp('scripts')
    for name, text in SCRIPTS.items():
        (root / f'{name}.py').write_text(text)
    return root


@pytest.fixture(scope='module')
def server(scripts):
    server = ToolServer(['json'], cwd=str(scripts))
    yield server
    server.close()


@pytest.mark.parametrize('name', sorted(SCRIPTS))
def test_same_as_a_new_interpreter(scripts, server, name):
    argv = [str(scripts / f'{name}.py'), 'a', 'b']
    want = subprocess.run([sys.executable, *argv], cwd=scripts, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    got = server.run(argv)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    if name == 'killed':
        assert got.returncode == -signal.SIGKILL


def test_calls_share_nothing(scripts, server):
    for _ in range(2):  # a module changed by one call is fresh again in the next
        assert server.run([scripts / 'state.py']).stdout == '1 __main__ True\n'


def test_merged_output_missing_script_and_timeout(scripts, server, tmp_path):
    proc = server.run([scripts / 'ok.py'], merge_stderr=True)
    assert proc.returncode == 0 and proc.stderr is None
    assert sorted(proc.stdout.splitlines()) == ["err", "out []"]
    proc = server.run([tmp_path / 'missing.py'])
    assert proc.returncode == 2 and "can't open file" in proc.stderr
    sleeper = tmp_path / 'sleep.py'
    sleeper.write_text('import time\ntime.sleep(60)\n')
    with pytest.raises(subprocess.TimeoutExpired):
        server.run([sleeper], timeout=0.5)
    assert server.run([scripts / 'exit_code.py']).returncode == 3  # still serving
