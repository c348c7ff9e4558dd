"""pytest fixtures for the end-to-end suites (helpers: server_harness.py)."""

import pytest

from server_harness import png_bytes, start_server, stop_server


@pytest.fixture(scope="session")
def server():
    running = start_server()
    yield running
    assert stop_server(running) == 0, "".join(running.log)


@pytest.fixture(scope="session")
def client(server):
    from iblip_client import Client
    with Client(server.address, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "red.png"
    path.write_bytes(png_bytes())
    return str(path)
