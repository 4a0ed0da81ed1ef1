"""A loopback HTTP server for download tests: 127.0.0.1 only, started and stopped by the test.

Usage::

    with LoopbackServer({'/ckpt/a.pth': data}) as srv:
        url = srv.url('/ckpt/a.pth')
        ...
        srv.files['/ckpt/a.pth'] = other_bytes      # change what is served
        srv.truncate['/ckpt/a.pth'] = 100           # send 100 bytes, then drop the connection
        srv.requests                                # paths requested so far, in order

The server binds an ephemeral port on 127.0.0.1 (never another address), serves each request on
its own daemon thread with a socket timeout, and ``stop()`` (or leaving the ``with`` block) shuts
it down within ``timeout`` seconds. Nothing here reaches beyond the loopback interface.
"""
from __future__ import annotations

import http.server
import socketserver
import threading
from typing import Dict, List, Optional


class _Handler(http.server.BaseHTTPRequestHandler):
    server: '_Server'
    timeout = 10  # seconds a stalled client may hold a handler thread

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 (http.server naming)
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        path = self.path.split('?', 1)[0]
        with owner.lock:
            owner.requests.append(path)
            data = owner.files.get(path)
            cut = owner.truncate.get(path)
            redirect = owner.redirects.get(path)
            status = owner.status.get(path)
        if redirect is not None:
            self.send_response(302)
            self.send_header('Location', redirect)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        if status is not None:
            self.send_response(status)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        if data is None:
            self.send_response(404)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if not body:
            return
        if cut is not None:
            # Announce the full length, send part of it, then drop the connection: what a
            # download interrupted by a network failure looks like to the client.
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: 'LoopbackServer'


class LoopbackServer:
    """Serve ``files`` (URL path -> bytes) on ``http://127.0.0.1:<ephemeral port>``."""

    def __init__(self, files: Optional[Dict[str, bytes]] = None, timeout: float = 10.0) -> None:
        self.files: Dict[str, bytes] = dict(files or {})
        self.truncate: Dict[str, int] = {}
        self.redirects: Dict[str, str] = {}
        self.status: Dict[str, int] = {}
        self.requests: List[str] = []
        self.lock = threading.Lock()
        self.timeout = timeout
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        assert self._server is not None, 'server not started'
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.port}{path}'

    def start(self) -> 'LoopbackServer':
        self._server = _Server(('127.0.0.1', 0), _Handler)
        self._server.owner = self
        self._server.timeout = self.timeout
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs=dict(poll_interval=0.05), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(self.timeout)
            self._server = None

    def __enter__(self) -> 'LoopbackServer':
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
