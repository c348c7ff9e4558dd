"""Small HTTP/1.1 helpers over raw sockets for the HTTP tests: they send
exactly the bytes a test means (slow, partial, malformed, pipelined) and
parse what comes back."""

import base64
import json
import socket
import ssl
import time

from server_harness import png_bytes


def host_port(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def connect(address, timeout=30, tls_context=None):
    sock = socket.create_connection(host_port(address), timeout=timeout)
    if tls_context is not None:
        sock = tls_context.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def request_bytes(method, target, body=b"", headers=()):
    if isinstance(body, str):
        body = body.encode()
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [h.encode() if isinstance(h, str) else h for h in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        return self.headers.get(name.lower())


def read_response(sock, head=False, data=b""):
    """One response from `sock` (Content-Length, chunked, or until close);
    `data`: its first bytes, read already."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response header: {data[:200]!r}")
        data += chunk
    header, rest = data.split(b"\r\n\r\n", 1)
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    if head or status in (100, 204, 304):
        return Response(status, headers, b""), rest
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += _recv(sock)
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += _recv(sock)
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                return Response(status, headers, body), rest
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            rest += _recv(sock)
        return Response(status, headers, rest[:length]), rest[length:]
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            chunk = b""
        if not chunk:
            return Response(status, headers, rest), b""
        rest += chunk


def _recv(sock):
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("closed mid-response")
    return chunk


def exchange(address, method, target, body=b"", headers=(), head=False, tls_context=None,
             timeout=30):
    """One request on a fresh connection; the response."""
    with connect(address, timeout, tls_context) as sock:
        sock.sendall(request_bytes(method, target, body, headers))
        return read_response(sock, head=head)[0]


def closed_within(sock, seconds):
    """True if the peer closes `sock` within `seconds` (what it sends first
    is read and dropped)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
    return False


def data_url(image=None):
    return "data:image/png;base64," + base64.b64encode(image or png_bytes()).decode()


def user_message(text, image=True):
    content = [{"type": "text", "text": text}]
    if image:
        content.insert(0, {"type": "image_url", "image_url": {"url": data_url()}})
    return {"role": "user", "content": content}


def chat_body(text="describe the image", image=True, **fields):
    return json.dumps({"messages": [user_message(text, image)], **fields})


def events(text):
    """The data: payloads of a server-sent event stream."""
    if isinstance(text, bytes):
        text = text.decode()
    return [block[len("data: "):] for block in text.split("\n\n") if block.startswith("data: ")]
