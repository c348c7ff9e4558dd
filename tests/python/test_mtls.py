"""Mutual TLS refuses the clients it must: a certificate signed by another
CA, one signed by an impostor CA that copies the trusted CA's name, and no
certificate at all. The trusted CA's client certificate is served by the
same server, so each refusal is about the certificate, not a broken setup;
refused clients never reach the service (no request is counted) and the
server goes on serving."""

import grpc
import pytest

from iblip_client import Client
from pki import CLIENT_EXTENSION, SERVER_EXTENSION, issue, make_ca
from server_harness import metric, png_bytes, run_client, scrape_metrics, start_server, stop_server

REFUSED_CLIENTS = ["other-ca-client", "impostor-ca-client"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("mtls")
    make_ca(d, "trusted", subject="/CN=test-ca")
    make_ca(d, "other", subject="/CN=other-ca")
    make_ca(d, "impostor", subject="/CN=test-ca")  # the trusted CA's name, another key
    issue(d, "trusted", "server", SERVER_EXTENSION)
    issue(d, "trusted", "trusted-ca-client", CLIENT_EXTENSION)
    issue(d, "other", "other-ca-client", CLIENT_EXTENSION)
    issue(d, "impostor", "impostor-ca-client", CLIENT_EXTENSION)
    return d


@pytest.fixture(scope="module")
def server(pki):
    running = start_server("--tls.cert-file", str(pki / "server.pem"),
                           "--tls.key-file", str(pki / "server.key"),
                           "--tls.client-ca-file", str(pki / "trusted.pem"))
    yield running
    assert stop_server(running) == 0, "".join(running.log)


def generate(server, pki, client_name=None):
    """A short GenerateUnary over TLS (trusting the server's CA), presenting
    CLIENT_NAME.pem when given."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "trusted.pem").read_bytes(),
        private_key=(pki / f"{client_name}.key").read_bytes() if client_name else None,
        certificate_chain=(pki / f"{client_name}.pem").read_bytes() if client_name else None)
    with Client(server.address, timeout=30,
                channel=grpc.secure_channel(server.address, credentials)) as client:
        return client.generate_unary(png_bytes(), "hi", max_new_tokens=2)


def requests_counted(server):
    return sum(v for (name, _), v in scrape_metrics(server).items()
               if name == "iblip_requests_total")


@pytest.mark.parametrize("client_name", REFUSED_CLIENTS + [None],
                         ids=REFUSED_CLIENTS + ["no-client-certificate"])
def test_a_client_certificate_the_trusted_ca_did_not_sign_is_refused(server, pki, client_name):
    before = requests_counted(server)
    with pytest.raises(grpc.RpcError) as error:
        generate(server, pki, client_name)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
    assert requests_counted(server) == before  # refused in the handshake
    # The trusted CA's client is served by the same server, before and after.
    assert generate(server, pki, "trusted-ca-client").usage.generated_tokens >= 1
    assert requests_counted(server) == before + 1
    assert metric(scrape_metrics(server), "iblip_requests_running") == 0


@pytest.mark.parametrize("client_name", REFUSED_CLIENTS)
def test_the_cli_is_refused_with_another_ca_s_certificate(server, pki, client_name):
    def health(name):
        return run_client("health", "--server", server.address, "--timeout", "10",
                          "--tls-ca", str(pki / "trusted.pem"),
                          "--tls-cert", str(pki / f"{name}.pem"),
                          "--tls-key", str(pki / f"{name}.key"))
    refused = health(client_name)
    assert refused.returncode != 0 and "SERVING" not in refused.stdout
    served = health("trusted-ca-client")
    assert served.returncode == 0 and served.stdout.strip() == "SERVING", served.stderr
