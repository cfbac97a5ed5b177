"""A threaded HTTP server on 127.0.0.1 for the fakes: started by `with`, stopped on exit."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class ThreadedServer:
    """Serves HANDLER on a free loopback port in a daemon thread; `url` is its base address."""

    def __init__(self, handler):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
