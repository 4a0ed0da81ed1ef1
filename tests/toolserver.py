# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Run command-line tools in forked copies of one interpreter that imported their modules once.

Every ``python tools/x.py`` start-up imports torch, mmengine, mmcv, mmdet and mmbackbones anew:
5-7 s of CPU per call on a 2-core test machine, most of a converter test's cost. ``ToolServer``
starts one interpreter (same executable, environment and working directory as the subprocess it
replaces) that runs the top level of the given scripts once, without their ``__main__`` block: it
imports exactly the modules those scripts import before any of their own code runs. Then it
forks one child per call. A child is a fresh copy of that state (nothing carries over from one
call to the next) and runs the script the way ``python script.py`` does: as ``__main__``, with
``sys.argv`` set and the script's folder as ``sys.path[0]``, stdin at ``/dev/null`` and stdout /
stderr captured at the file-descriptor level (so loggers bound to the original streams are
captured too). Its exit status is the one Python gives: 0, the ``SystemExit`` code (1 with the
message on stderr for a non-int), 1 after an uncaught exception (traceback on stderr), ``-N`` when
killed by signal N, 2 for a missing script.

What differs from a new interpreter: output written while those modules are imported (warnings of
third-party packages) is not in each call's stderr, and the calls share Python's hash seed.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional, Sequence


class ToolServer:
    """``ToolServer([script, ...], env, cwd).run([script, *args], timeout=..)``: a
    ``subprocess.CompletedProcess`` (``preload``: the scripts to be run, or module names)."""

    def __init__(self, preload: Sequence[str], env: Optional[Dict[str, str]] = None,
                 cwd: Optional[str] = None):
        self._tmp = tempfile.TemporaryDirectory(prefix='mmb_toolserver_')
        self._log = Path(self._tmp.name) / 'server.log'
        self._calls = 0
        with self._log.open('w') as log:
            self._proc = subprocess.Popen([sys.executable, __file__, *map(str, preload)],
                                          cwd=cwd, env=env, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log, text=True)
        ready = self._proc.stdout.readline()
        if ready.strip() != 'ready':
            raise RuntimeError(f'tool server did not start:\n{self._server_log()}')

    def _server_log(self) -> str:
        return self._log.read_text()[-6000:] if self._log.exists() else ''

    def run(self, argv: Sequence[str], timeout: float = 300, merge_stderr: bool = False,
            cwd: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run ``python argv[0] argv[1:]``; ``merge_stderr``: stderr goes into ``.stdout``."""
        argv = [str(a) for a in argv]
        self._calls += 1
        out = Path(self._tmp.name) / f'{self._calls}.out'
        err = out if merge_stderr else Path(self._tmp.name) / f'{self._calls}.err'
        request = dict(argv=argv, out=str(out), err=str(err), timeout=timeout,
                       cwd=None if cwd is None else str(cwd))
        self._proc.stdin.write(json.dumps(request) + '\n')
        self._proc.stdin.flush()
        reply = self._proc.stdout.readline()
        if not reply:
            raise RuntimeError(f'tool server died:\n{self._server_log()}')
        reply = json.loads(reply)
        stdout = out.read_text(errors='replace')
        stderr = None if merge_stderr else err.read_text(errors='replace')
        cmd = [sys.executable, *argv]
        if reply['returncode'] is None:
            raise subprocess.TimeoutExpired(cmd, timeout, output=stdout, stderr=stderr)
        return subprocess.CompletedProcess(cmd, reply['returncode'], stdout, stderr)

    def close(self) -> None:
        # between calls the server only waits for the next request: nothing of it to wind down
        self._proc.kill()
        self._proc.wait()
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._tmp.cleanup()


# ------------------------------------------------------------------ the server process


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(request: dict) -> None:
    """Runs in the forked child; never returns."""
    import atexit
    import runpy
    code = 1
    try:
        if request['cwd']:
            os.chdir(request['cwd'])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        out = os.open(request['out'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = out if request['err'] == request['out'] else \
            os.open(request['err'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdin = open(os.devnull)
        argv = request['argv']
        if not os.path.isfile(argv[0]):  # as python itself says it
            print(f"{sys.executable}: can't open file {os.path.abspath(argv[0])!r}",
                  file=sys.stderr)
            code = 2
            return
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        try:
            runpy.run_path(argv[0], run_name='__main__')
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException as exc:
            tb = exc.__traceback__  # from the script's own frame on, as python prints it
            while tb is not None and tb.tb_frame.f_code.co_filename != argv[0]:
                tb = tb.tb_next
            if tb is not None:
                exc.__traceback__ = tb
            sys.excepthook(type(exc), exc, exc.__traceback__)
            code = 1
        try:
            atexit._run_exitfuncs()
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
    finally:
        os._exit(code)


def _wait(pid: int, timeout: float) -> Optional[int]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


def _serve(preload: Sequence[str]) -> None:
    import importlib
    import runpy
    for name in preload:
        if name.endswith('.py'):  # its top level (imports, definitions), not its __main__ block
            sys.path[0] = os.path.dirname(os.path.abspath(name))  # as when it is run
            runpy.run_path(name, run_name='__toolserver_preload__')
        else:
            importlib.import_module(name)
    replies = os.fdopen(os.dup(1), 'w')
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)  # the server prints nothing itself; children get their own files
    replies.write('ready\n')
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        replies.write(json.dumps(dict(returncode=_wait(pid, request['timeout']))) + '\n')
        replies.flush()


if __name__ == '__main__':
    _serve(sys.argv[1:])
