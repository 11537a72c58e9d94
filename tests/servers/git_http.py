#!/usr/bin/env python3
"""A smart-HTTP git server for AIDA's end-to-end tests (Python 3 stdlib only).

It runs `git http-backend` as a CGI program behind `http.server`, serving the
bare repositories below one directory (`git http-backend`'s
GIT_PROJECT_ROOT, every repository exported, `http.receivepack` on so that
`git push` works), the way a git hosting service serves
`https://host/NAME.git`.

Usage:  git_http.py ROOT

Environment:
  GIT_HTTP_USER   the user name every request must present (basic auth)
  GIT_HTTP_TOKEN  the password (a token) it must present; both come from the
                  environment, never from argv, so they do not show in `ps`
  GIT_HTTP_LOG    a file to which one JSON line per request is appended:
                  {"method", "path", "query": {name: value}, "user": the
                  authenticated user or null, "credentials": "missing",
                  "wrong" or "ok", "status"}; never a credential

Contract:
  * binds 127.0.0.1 on port 0 and prints `listening on <port>` as its first
    line on stdout (flushed), so a test learns the port without a race;
  * a request without credentials, or with other ones, is answered
    `401 Unauthorized` with `WWW-Authenticate: Basic realm="git"`, as GitHub
    answers, and git then asks its credential helper or fails;
  * request bodies may be framed by Content-Length or by chunked
    Transfer-Encoding (git streams large pushes chunked); either way the body
    is streamed to the CGI's stdin, CONTENT_LENGTH only set when the client
    sent one (http-backend then reads to end of file). `Content-Encoding:
    gzip` reaches the CGI as HTTP_CONTENT_ENCODING, and http-backend inflates
    it itself; `Git-Protocol` reaches it as HTTP_GIT_PROTOCOL (protocol v2);
  * the CGI's output is streamed back: its `Status:` header (200 if absent)
    becomes the response status, its other headers are passed on, and its
    body goes out chunked (HTTP/1.1, keep-alive) or until close (HTTP/1.0).
"""

import base64
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

# How much of an unwanted request body (one answered 401) is read and
# dropped so that the connection can close cleanly instead of being reset.
DRAIN_LIMIT = 64 * 1024 * 1024
COPY_SIZE = 64 * 1024


class Config:
    """What the server was started with."""

    def __init__(self, root, user, token, log_path):
        self.root = os.path.abspath(root)
        self.user = user
        self.token = token
        self.log_path = log_path
        self.log_lock = threading.Lock()
        self.backend = git_http_backend()

    def log(self, entry):
        if not self.log_path:
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.log_lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


def git_http_backend():
    """The `git http-backend` program (it lives in git's exec path)."""
    exec_path = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = os.path.join(exec_path, "git-http-backend")
    if not os.access(path, os.X_OK):
        path = shutil.which("git-http-backend") or path
    return path


class BodyReader:
    """Reads a request body framed by Content-Length or chunked encoding."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        encoding = headers.get("Transfer-Encoding", "").lower()
        self.chunked = "chunked" in encoding
        length = headers.get("Content-Length")
        self.remaining = int(length) if length and not self.chunked else 0
        self.done = not self.chunked and self.remaining == 0

    def chunks(self):
        """Yields the body's bytes in pieces until it ends."""
        while not self.done:
            piece = self._next_piece()
            if piece:
                yield piece

    def _next_piece(self):
        if self.chunked:
            return self._next_chunk()
        data = self.rfile.read(min(COPY_SIZE, self.remaining))
        if not data:
            raise ConnectionError("request body ended early")
        self.remaining -= len(data)
        self.done = self.remaining == 0
        return data

    def _next_chunk(self):
        size_line = self.rfile.readline(1024)
        if not size_line:
            raise ConnectionError("chunked body ended early")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            self._skip_trailers()
            self.done = True
            return b""
        data = self.rfile.read(size)
        if len(data) != size:
            raise ConnectionError("chunk ended early")
        self.rfile.readline(1024)  # the CRLF after the chunk
        return data

    def _skip_trailers(self):
        while True:
            line = self.rfile.readline(8192)
            if line in (b"\r\n", b"\n", b""):
                return

    def drain(self, limit=DRAIN_LIMIT):
        """Reads and drops the body; False if it was larger than `limit`."""
        seen = 0
        for piece in self.chunks():
            seen += len(piece)
            if seen > limit:
                return False
        return True


def parse_query(query):
    return dict(parse_qsl(query, keep_blank_values=True))


def basic_credentials(header):
    """(user, password) from an `Authorization: Basic` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class GitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aida-test-git-http/1"
    config = None  # set by main()

    def do_GET(self):
        self.handle_git()

    def do_POST(self):
        self.handle_git()

    def handle_git(self):
        parts = urlsplit(self.path)
        self.entry = {
            "method": self.command,
            "path": parts.path,
            "query": parse_query(parts.query),
            "user": None,
            "credentials": "missing",
            "status": None,
        }
        body = BodyReader(self.rfile, self.headers)
        user = self.authenticate()
        if user is None:
            self.refuse(body)
            return
        self.entry["user"] = user
        self.entry["credentials"] = "ok"
        self.run_cgi(user, unquote(parts.path), parts.query, body)

    def authenticate(self):
        """The user when the request carries the expected credentials."""
        creds = basic_credentials(self.headers.get("Authorization"))
        if creds is None:
            return None
        self.entry["credentials"] = "wrong"
        user, password = creds
        cfg = self.config
        user_ok = hmac.compare_digest(user.encode(), cfg.user.encode())
        token_ok = hmac.compare_digest(password.encode(), cfg.token.encode())
        return user if user_ok and token_ok else None

    def refuse(self, body):
        if not body.drain():
            self.close_connection = True
        message = b"Authentication required\n"
        self.start_response(401, "Unauthorized")
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        self.wfile.write(message)

    def start_response(self, code, reason):
        """Logs the request (before any byte of the answer leaves, so the
        log is complete once the client has its answer) and sends the
        status line."""
        self.entry["status"] = code
        self.config.log(self.entry)
        self.send_response(code, reason)

    def cgi_environment(self, user, path_info, query):
        cfg = self.config
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": cfg.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
            "HOME": cfg.root,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": self.request_version,
            "SERVER_SOFTWARE": self.server_version,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(self.server.server_address[1]),
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": user,
            "AUTH_TYPE": "Basic",
        }
        content_type = self.headers.get("Content-Type")
        if content_type:
            env["CONTENT_TYPE"] = content_type
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            env["CONTENT_LENGTH"] = self.headers.get("Content-Length", "0")
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("AUTHORIZATION", "CONTENT_TYPE", "CONTENT_LENGTH"):
                continue
            env["HTTP_" + key] = value
        return env

    def run_cgi(self, user, path_info, query, body):
        env = self.cgi_environment(user, path_info, query)
        proc = subprocess.Popen(
            [self.config.backend],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
        )
        feeder = threading.Thread(target=feed, args=(body, proc.stdin), daemon=True)
        feeder.start()
        try:
            status, reason, headers = read_cgi_headers(proc.stdout)
            self.send_cgi_response(status, reason, headers, proc.stdout)
        finally:
            feeder.join()
            proc.stdout.close()
            proc.wait()
            if not body.done:
                self.close_connection = True

    def send_cgi_response(self, status, reason, headers, stdout):
        chunked = self.request_version == "HTTP/1.1"
        self.start_response(status, reason)
        for name, value in headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        while True:
            data = stdout.read1(COPY_SIZE)
            if not data:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))


def feed(body, stdin):
    """Copies the request body to the CGI's stdin, then closes it."""
    try:
        for piece in body.chunks():
            stdin.write(piece)
    except (BrokenPipeError, ConnectionError, ValueError) as e:
        sys.stderr.write("request body: %s\n" % e)
    finally:
        try:
            stdin.close()
        except BrokenPipeError:
            pass


def read_cgi_headers(stdout):
    """(status, reason, [(name, value)]) from the CGI's header block."""
    status, reason, headers = 200, "OK", []
    first = True
    while True:
        line = stdout.readline()
        if not line and first:
            return 502, "CGI gave no answer", []
        first = False
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        value = value.strip()
        if name.lower() == "status":
            code, _, text = value.partition(" ")
            status, reason = int(code), text or None
        else:
            headers.append((name, value))
    return status, reason, headers


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: git_http.py ROOT (credentials in GIT_HTTP_USER/GIT_HTTP_TOKEN)")
    user = os.environ.get("GIT_HTTP_USER")
    token = os.environ.get("GIT_HTTP_TOKEN")
    if not user or not token:
        sys.exit("GIT_HTTP_USER and GIT_HTTP_TOKEN must be set")
    GitHandler.config = Config(sys.argv[1], user, token, os.environ.get("GIT_HTTP_LOG"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), GitHandler)
    server.daemon_threads = True
    print("listening on %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
