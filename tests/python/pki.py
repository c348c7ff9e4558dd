"""Certificates for the TLS tests, made with openssl in a test's temporary
folder: certificate authorities and the certificates they sign."""

import subprocess


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory, name, subject="/CN=test-ca"):
    """A self-signed CA: NAME.pem and NAME.key in `directory`. Two CAs may
    share a subject: only their keys tell them apart."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)
    return directory / f"{name}.pem"


def issue(directory, ca, name, extension):
    """NAME.pem and NAME.key signed by the CA `ca` (the name make_ca got),
    with one X.509 v3 extension line (subjectAltName=..., extendedKeyUsage=...)."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    (directory / f"{name}.ext").write_text(extension + "\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
            cwd=directory)
    return directory / f"{name}.pem", directory / f"{name}.key"


SERVER_EXTENSION = "subjectAltName=IP:127.0.0.1,DNS:localhost"
CLIENT_EXTENSION = "extendedKeyUsage=clientAuth"
