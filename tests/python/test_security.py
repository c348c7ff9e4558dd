"""TLS, mutual TLS and API keys, with certificates this test makes with
openssl; the clients (CLI, Python, HTTP) against each; HTTPS on the HTTP API
with the same certificates; keys for reflection, /v1/models and (when asked)
/metrics."""

import base64
import http.client
import json
import socket
import ssl
import subprocess
import urllib.request

import grpc
import pytest

from http_util import chat_body, connect, exchange, read_response
from server_harness import (PACKAGE_DIR, SERVER_BIN, png_bytes, run_client, start_server,
                            stop_server)

KEY = "s3cret-key-1"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                "-out", f"{name}.pem", cwd=d)
    (d / "keys.txt").write_text(f"# API keys\n\n{KEY}\nother-key\n")
    return d


def health(server, *flags):
    return run_client("health", "--server", server.address, "--timeout", "10", *flags)


def test_tls_serves_only_tls(pki):
    server = start_server("--tls.cert-file", str(pki / "server.pem"),
                          "--tls.key-file", str(pki / "server.key"))
    try:
        ok = health(server, "--tls-ca", str(pki / "ca.pem"))
        assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stderr
        assert health(server).returncode != 0  # plaintext is refused
        from iblip_client import Client
        with Client(server.address, timeout=30,
                    root_certificates=(pki / "ca.pem").read_bytes()) as client:
            assert client.generate_unary(png_bytes(), "hi", max_new_tokens=2).usage.generated_tokens
    finally:
        assert stop_server(server) == 0, "".join(server.log)


def test_mutual_tls_needs_a_client_certificate(pki):
    server = start_server("--tls.cert-file", str(pki / "server.pem"),
                          "--tls.key-file", str(pki / "server.key"),
                          "--tls.client-ca-file", str(pki / "ca.pem"))
    try:
        assert health(server, "--tls-ca", str(pki / "ca.pem")).returncode != 0
        ok = health(server, "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "client.pem"),
                    "--tls-key", str(pki / "client.key"))
        assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stderr
    finally:
        assert stop_server(server) == 0, "".join(server.log)


def test_a_bad_tls_config_fails_at_startup(pki):
    result = subprocess.run([SERVER_BIN, "--model", PACKAGE_DIR, "--port", "0",
                             "--tls.cert-file", str(pki / "server.pem")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "cert_file and key_file go together" in result.stderr


@pytest.fixture(scope="module")
def keyed(pki):
    server = start_server("--auth.api-keys-file", str(pki / "keys.txt"),
                          "--http.enabled", "true", "--http.port", "0")
    yield server
    assert stop_server(server) == 0, "".join(server.log)


def test_api_keys_guard_every_call_but_health(keyed, image_path):
    common = ["--server", keyed.address, "--image", image_path, "--max-new-tokens", "2"]
    missing = run_client("generate", *common)
    assert missing.returncode == 1 and "UNAUTHENTICATED" in missing.stderr
    wrong = run_client("generate", *common, "--api-key", "nope")
    assert wrong.returncode == 1 and "unknown API key" in wrong.stderr
    assert "nope" not in wrong.stderr.split("UNAUTHENTICATED", 1)[1]  # never echoed
    ok = run_client("generate", *common, "--api-key", KEY)
    assert ok.returncode == 0, ok.stderr
    assert run_client("info", "--server", keyed.address).returncode == 1
    assert run_client("info", "--server", keyed.address, "--api-key", "other-key").returncode == 0
    assert health(keyed).returncode == 0  # exempt: probes carry no key
    from iblip_client import Client
    with Client(keyed.address, timeout=30) as client:
        with pytest.raises(grpc.RpcError) as error:
            client.tokenize("hi")
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with Client(keyed.address, timeout=30, api_key=KEY) as client:
        assert client.tokenize("hi").input_ids


def reflection_services(address, *metadata):
    """The services gRPC reflection lists (raw bytes: list_services is field
    7 of ServerReflectionRequest)."""
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        return b"".join(call(iter([b"\x3a\x00"]), metadata=list(metadata), timeout=10))


def test_reflection_needs_a_key(keyed):
    with pytest.raises(grpc.RpcError) as error:
        reflection_services(keyed.address)
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        reflection_services(keyed.address, ("authorization", "Bearer nope"))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = reflection_services(keyed.address, ("authorization", f"Bearer {KEY}"))
    assert b"iblip.v1.InstructBlipService" in listed


def test_models_and_every_v1_path_need_a_key_before_the_body_is_read(keyed):
    assert exchange(keyed.http_address, "GET", "/v1/models").status == 401
    assert exchange(keyed.http_address, "GET", "/v1/nothing").status == 401
    ok = exchange(keyed.http_address, "GET", "/v1/models", headers=[f"Authorization: Bearer {KEY}"])
    assert ok.status == 200
    # A header announcing a large body, and no body: the 401 comes anyway.
    with connect(keyed.http_address) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 20000000\r\n\r\n")
        response, _ = read_response(sock)
    assert response.status == 401 and response.header("www-authenticate") == "Bearer"
    assert exchange(keyed.http_address, "GET", "/").status == 200  # the page is open
    assert urllib.request.urlopen(f"http://{keyed.metrics_address}/metrics").status == 200


def test_metrics_can_require_a_key(pki):
    server = start_server("--auth.api-keys-file", str(pki / "keys.txt"),
                          "--auth.metrics-exempt", "false")
    try:
        assert exchange(server.metrics_address, "GET", "/metrics").status == 401
        ok = exchange(server.metrics_address, "GET", "/metrics",
                      headers=[f"Authorization: Bearer {KEY}"])
        assert ok.status == 200 and b"iblip_kv_cache_blocks" in ok.body
    finally:
        assert stop_server(server) == 0, "".join(server.log)


@pytest.fixture(scope="module")
def https(pki):
    """Keys, TLS, and the HTTP API: it speaks HTTPS with the gRPC certificate."""
    server = start_server("--auth.api-keys-file", str(pki / "keys.txt"),
                          "--tls.cert-file", str(pki / "server.pem"),
                          "--tls.key-file", str(pki / "server.key"),
                          "--http.enabled", "true", "--http.port", "0")
    yield server
    assert stop_server(server) == 0, "".join(server.log)


def test_the_http_api_speaks_https_with_the_grpc_certificate(https, pki):
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    response = exchange(https.http_address, "POST", "/v1/chat/completions",
                        chat_body(max_tokens=2), headers=[f"Authorization: Bearer {KEY}"],
                        tls_context=context)
    assert response.status == 200 and response.json()["usage"]["completion_tokens"] == 2
    # Plain HTTP gets no answer.
    with connect(https.http_address) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            reply = sock.recv(4096)
        except (ConnectionResetError, socket.timeout):
            reply = b""
        assert not reply.startswith(b"HTTP/")


def test_the_requests_that_ended_the_process_get_4xx_with_keys_and_tls(https, pki):
    """As first reported: API keys and TLS on, no key sent."""
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with connect(https.http_address, tls_context=context) as sock:
        sock.sendall(b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0].status == 404
    for body in (chat_body(stream=True, stream_options={"include_usage": 1}),
                 chat_body()[:-1] + ', "n": ' + "[" * 60000 + "]" * 60000 + "}"):
        response = exchange(https.http_address, "POST", "/v1/chat/completions", body,
                            tls_context=context)
        assert response.status == 401  # refused before the body is read
        response = exchange(https.http_address, "POST", "/v1/chat/completions", body,
                            headers=[f"Authorization: Bearer {KEY}"], tls_context=context)
        assert response.status == 400
    assert https.process.poll() is None
    ok = health(https, "--tls-ca", str(pki / "ca.pem"))
    assert ok.returncode == 0 and "SERVING" in ok.stdout, ok.stderr


def test_mutual_tls_on_the_http_api(pki):
    server = start_server("--tls.cert-file", str(pki / "server.pem"),
                          "--tls.key-file", str(pki / "server.key"),
                          "--tls.client-ca-file", str(pki / "ca.pem"),
                          "--http.enabled", "true", "--http.port", "0")
    try:
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            exchange(server.http_address, "GET", "/v1/models", tls_context=context)
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        assert exchange(server.http_address, "GET", "/v1/models",
                        tls_context=context).status == 200
    finally:
        assert stop_server(server) == 0, "".join(server.log)


def test_api_keys_guard_the_http_api(keyed):
    host, port = keyed.http_address.rsplit(":", 1)
    body = json.dumps({"max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(png_bytes()).decode()}},
        {"type": "text", "text": "hi"}]}]})
    for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 401),
                            ({"Authorization": f"Bearer {KEY}"}, 200)):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/v1/chat/completions", body, headers)
        response = connection.getresponse()
        payload = json.loads(response.read())
        assert response.status == status, payload
        if status == 401:
            assert payload["error"]["type"] == "authentication_error"


def test_health_can_require_a_key(pki):
    server = start_server("--auth.api-keys-file", str(pki / "keys.txt"),
                          "--auth.health-exempt", "false")
    try:
        assert health(server).returncode != 0
        assert health(server, "--api-key", KEY).returncode == 0
    finally:
        assert stop_server(server) == 0, "".join(server.log)
