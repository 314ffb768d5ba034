"""The REST API on a real uvicorn, and a plain HTTP client for it (stdlib only: every byte under control).

Used by tests/test_serve.py and bench/serve_load.py:

    with ApiServer(create_app(store)) as server:          # uvicorn in a thread, on a free local port
        status, answer = post_images(server.url, [("bee.jpg", data)])
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from urllib.parse import urlsplit


class ApiServer:
    """uvicorn serving `app` from a background thread on 127.0.0.1 and a free port."""

    def __init__(self, app) -> None:
        from qtl.deploy.server import listen, uvicorn_server

        self.app = app
        self.sock = listen("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn_server(app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str | None = None) -> tuple[bytes, str]:
    """(field, filename or None for a text field, bytes) parts -> (body, content type)."""
    boundary = boundary or uuid.uuid4().hex
    chunks = []
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if filename is not None:
            head += "Content-Type: application/octet-stream\r\n"
        chunks += [head.encode(), b"\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None, timeout=120
):
    """(status, parsed JSON or the raw text) of one request to `url` (path and query included)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read().decode("utf-8", "replace")
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw


def post_images(url: str, files: list[tuple[str, bytes]], query: str = "", timeout=120):
    """POST files in the field `file` to url/predict -> (status, JSON)."""
    body, content_type = multipart([("file", name, data) for name, data in files])
    return request(f"{url}/predict{query}", "POST", body, {"Content-Type": content_type}, timeout)
