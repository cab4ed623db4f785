"""A real HTTP server on 127.0.0.1 standing in for Google Drive / a weights mirror in the tests.

It serves files from memory with Range support (206 + Content-Range, If-Range against an ETag), records every
request's path and Range header, and can misbehave on purpose: drop the connection halfway through a body,
hold a body halfway until the test releases it, or answer with a web page.
"""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1 << 16


class WeightsServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}  # path -> body
        self.pages: dict[str, str] = {}  # path -> HTML answered with 200 instead of a file
        self.drops: dict[str, int] = {}  # path -> how many more responses to cut off halfway
        self.gates: dict[str, threading.Event] = {}  # path -> the body stops halfway until the event is set
        self.halfway = threading.Event()  # set when a gated body reached its halfway point
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.authorizations: list[str | None] = []  # each request's Authorization header
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                server.authorizations.append(self.headers.get("Authorization"))
                server.serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def requests_for(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.requests if p == path]

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path
        if path in self.pages:
            body = self.pages[path].encode()
            h.send_response(200)
            h.send_header("Content-Type", "text/html; charset=utf-8")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        data = self.files.get(path)
        if data is None:
            h.send_error(404)
            return
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
        if m and h.headers.get("If-Range") in (None, etag):
            start = int(m[1])
        body = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("ETag", etag)
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        half = len(body) // 2
        drop = self.drops.get(path, 0) > 0
        if drop:
            self.drops[path] -= 1
        try:
            for i in range(0, len(body), CHUNK):
                if i <= half < i + CHUNK:
                    h.wfile.write(body[i:half])
                    h.wfile.flush()
                    if drop:
                        h.close_connection = True
                        return  # the socket closes with the body half sent
                    if path in self.gates:
                        self.halfway.set()
                        self.gates[path].wait(60)
                    h.wfile.write(body[half:i + CHUNK])
                else:
                    h.wfile.write(body[i:i + CHUNK])
        except (BrokenPipeError, ConnectionResetError):
            pass

    def __enter__(self) -> WeightsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for gate in self.gates.values():
            gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# Pages in the style of what Google Drive answers instead of a large or restricted file.
DRIVE_QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can't view or download this file at
this time.</p><p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try
accessing the file again later. If the file you are trying to access is particularly large or is shared with many
people, it may take up to 24 hours to be able to view or download the file.</p></div></div></body></html>"""

DRIVE_VIRUS_SCAN_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p class="uc-warning-subcaption">DFEW-set1-model_best.pth (930M) is too large for Google to scan for viruses. Would
you still like to download this file?</p><form id="download-form" action="https://drive.usercontent.google.com/download"
method="get"><input type="submit" id="uc-download-link" value="Download anyway"/><input type="hidden" name="id"
value="x"><input type="hidden" name="confirm" value="t"></form></div></div></body></html>"""
