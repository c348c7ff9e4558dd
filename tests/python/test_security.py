"""TLS, mutual TLS and API keys, with certificates this test makes with
openssl; the clients (CLI, Python, HTTP) against each."""

import base64
import http.client
import json
import subprocess

import grpc
import pytest

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
