"""Running the app: uvicorn in the foreground (the CLI) or in a background thread (tests, the load
benchmark), both on a real socket."""

from __future__ import annotations

import threading
import time

import uvicorn


def config(app, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    # graceful shutdown: open requests get 30 s to finish, then the lifespan rejects what is queued
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)


def serve_forever(app, host: str, port: int, log_level: str = "info") -> None:
    uvicorn.Server(config(app, host, port, log_level)).run()


class Background:
    """`with Background(app) as url:` a live server on 127.0.0.1 on a free port, stopped on exit."""

    def __init__(self, app, host: str = "127.0.0.1", log_level: str = "warning"):
        self.server = uvicorn.Server(config(app, host, 0, log_level))
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, name="ptmoe-uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(60)
