"""`fgdsr ui --tracking-uri http://SERVER`: the remote server's UI on 127.0.0.1, logged in for you.

`mlflow ui` cannot read an HTTP store, and a browser would ask for the password. This small reverse
proxy listens on loopback only and forwards every request to the tracking server with HTTP basic auth
from `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` (the same variables trials use). It
refuses requests whose Host header is not its own loopback address (a web page cannot reach it through
DNS rebinding) and forwards the browser's Origin header, so the server's own CSRF checks still apply.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# hop-by-hop headers (RFC 9110 7.6.1) and what the proxy sets itself
_DROP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}
_CHUNK = 1 << 16


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # the browser follows redirects itself
        return None


def make_handler(upstream: str, port: int, login: tuple[str, str] | None) -> type[BaseHTTPRequestHandler]:
    """A request handler class forwarding to `upstream` (http://host:port, no trailing slash)."""
    own_hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    auth = "Basic " + b64encode(f"{login[0]}:{login[1]}".encode()).decode() if login else None
    opener = urllib.request.build_opener(_NoRedirect)

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if self.headers.get("Host") not in own_hosts:
                self.send_error(403, "Host header not accepted by the fgdsr ui proxy")
                return
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            req = urllib.request.Request(upstream + self.path, data=body, method=self.command)
            for k, v in self.headers.items():
                if k.lower() not in _DROP:
                    req.add_header(k, v)
            if auth is not None:
                req.add_header("Authorization", auth)  # replaces whatever the browser sent
            try:
                resp = opener.open(req, timeout=60)
            except urllib.error.HTTPError as e:  # 4xx/5xx/3xx: forwarded as they are
                resp = e
            except OSError as e:
                self.send_error(502, f"tracking server unreachable: {e}")
                return
            with resp:
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    if k.lower() not in _DROP:
                        self.send_header(k, v)
                self.end_headers()  # HTTP/1.0: the connection closes after the body
                shutil.copyfileobj(resp, self.wfile, _CHUNK)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
            pass  # quiet; the server logs requests

    return Handler


def serve_proxy(upstream: str, port: int, login: tuple[str, str] | None) -> int:
    """Serve until Ctrl+C; returns the exit code (130 when interrupted)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(upstream.rstrip("/"), port, login))
    httpd.daemon_threads = True
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        return 130
    finally:
        httpd.server_close()
    return 0
