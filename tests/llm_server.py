"""A misbehaving chat-completions server on 127.0.0.1 for the LLM bounds tests.

``mode`` decides each answer: "ok" (a JSON completion), "trickle" (headers, then one body byte every ``gap``
seconds, never finishing), "trickle-headers" (one header byte every ``gap`` seconds), "hang" (reads the request
and never answers), "redirect" (307 to ``location``), "status" (``status`` with a JSON error), "big" (a body of
``size`` bytes). Every request's size and parsed body are recorded, also for requests never answered.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(content: str) -> dict:
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}


class ScriptedLLM:
    def __init__(self, mode: str = "ok"):
        self.mode, self.gap, self.status, self.location, self.size = mode, 0.3, 503, "", 2 << 20
        self.reply = '{"descriptions": ["raised cheeks and a wide smile"]}'
        self.requests: list[dict] = []  # {"size", "body", "time", "path"}
        self.stop = threading.Event()  # ends trickles and hangs (at close)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                outer.requests.append({"size": len(raw), "body": body, "time": time.monotonic(), "path": self.path})
                try:
                    outer.answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _send(self, h, status: int, data: bytes, headers: dict = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def answer(self, h) -> None:
        mode = self.mode
        if mode == "ok":
            self._send(h, 200, json.dumps(completion(self.reply)).encode())
        elif mode == "status":
            self._send(h, self.status, b'{"error": {"message": "inner-secret-body", "type": "x"}}',
                       {"Retry-After": "60"})
        elif mode == "redirect":
            self._send(h, 307, b"", {"Location": self.location})
        elif mode == "big":
            self._send(h, 200, b" " * self.size)
        elif mode == "hang":
            self.stop.wait(120)
        elif mode == "trickle":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "1000000")
            h.end_headers()
            h.wfile.flush()
            while not self.stop.wait(self.gap):
                h.wfile.write(b" ")
                h.wfile.flush()
        elif mode == "trickle-headers":
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000:
                if self.stop.wait(self.gap):
                    return
                h.wfile.write(bytes([byte]))
                h.wfile.flush()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
