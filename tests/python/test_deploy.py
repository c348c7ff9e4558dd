"""deploy/: the container recipe, the Kubernetes manifests, Prometheus config
and rules, and the Grafana dashboard, checked with the real tools offline; a
real Prometheus scrapes a running server."""

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from server_harness import BUILD_DIR, REPO_DIR, SERVER_BIN, png_bytes, start_server, stop_server

DEPLOY = os.path.join(REPO_DIR, "deploy")
REQUESTS = 7


def run(*args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def loaded():
    """A fresh server that answered REQUESTS requests, and its /metrics text."""
    from iblip_client import Client
    server = start_server()
    try:
        with Client(server.address, timeout=30) as client:
            for i in range(REQUESTS):
                client.generate_unary(png_bytes(color=(i * 30, 10, 10)), "describe", max_new_tokens=3)
        with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        yield server, metrics
    finally:
        assert stop_server(server) == 0, "".join(server.log)


# -- container ---------------------------------------------------------------

def dockerfile_stages():
    with open(os.path.join(DEPLOY, "docker", "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    return [stage.splitlines() for stage in stages]


def test_dockerfile_is_multistage_bookworm_non_root_and_uses_setup():
    build, runtime = dockerfile_stages()
    assert build[0].startswith("debian:bookworm AS build")
    assert runtime[0].startswith("debian:bookworm-slim AS runtime")
    assert any("scripts/setup" in line for line in build)
    assert any("scripts/build" in line for line in build)
    assert not any("scripts/setup" in line for line in runtime)  # runtime packages only
    user = [line for line in runtime if line.startswith("USER ")]
    assert user and not user[-1].split()[1].startswith(("0", "root"))
    assert "EXPOSE 50051 9090" in runtime
    assert any("/models/demo" in line for line in runtime)
    # The package it ships exists whether or not a trained demo is committed.
    copy = next(line for line in build if "/out/models/demo" in line)
    assert "build/demo-model" in copy and "build/tiny-package" in copy


def test_runtime_image_packages_cover_every_library_the_server_loads():
    _, runtime = dockerfile_stages()
    install = next(line for line in runtime if "apt-get install" in line)
    listed = install.split("--no-install-recommends", 1)[1].split("&&")[0].split()
    closure = run("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                  "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *listed)
    assert closure.returncode == 0, closure.stderr
    installed = {line.strip() for line in closure.stdout.splitlines() if not line.startswith(" ")}
    binaries = [SERVER_BIN, os.path.join(BUILD_DIR, "model", "iblip_spm_shim.so"),
                os.path.join(BUILD_DIR, "client", "iblip-client")]
    needed = set()
    for binary in binaries:
        for line in run("ldd", binary).stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and parts[1].strip().startswith("/"):
                path = os.path.realpath(parts[1].split()[0])
                owner = run("dpkg", "-S", path)
                if owner.returncode != 0:
                    owner = run("dpkg", "-S", parts[1].split()[0])
                needed.add(owner.stdout.split(":")[0])
    assert "libtorch1.13" in needed and "libgrpc++1.51" in needed  # ldd was read
    missing = {p for p in needed if p not in installed and f"{p}:amd64" not in installed}
    assert not missing, f"runtime stage lacks {sorted(missing)}"


# -- Kubernetes ----------------------------------------------------------------

def kustomize(path):
    result = run("kubectl", "kustomize", os.path.join(DEPLOY, "k8s", path))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("path", ["base", "overlays/example"])
def test_manifests_render_and_match_the_kubernetes_schemas(path):
    rendered = kustomize(path)
    validate = run("node", os.path.join(DEPLOY, "k8s", "validate", "validate.mjs"), input=rendered)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert kinds == {"ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "NetworkPolicy", "PodMonitor"}


def test_deployment_probes_drain_and_security():
    docs = [d for d in yaml.safe_load_all(kustomize("base")) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051
    assert container["readinessProbe"]["grpc"]["service"] == "iblip.v1.InstructBlipService"
    config = yaml.safe_load(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["server.yaml"])
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > config["drain_timeout_s"] + pre_stop
    assert config["max_connection_age_s"] > 0
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"] and container["resources"]["limits"]
    headless = next(d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
    assert headless["spec"]["ports"][0]["port"] == 50051
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    with open(os.path.join(DEPLOY, "k8s", "prometheus-adapter", "config.yaml")) as f:
        adapter = yaml.safe_load(yaml.safe_load(f)["data"]["config.yaml"])
    assert metric in [rule["name"]["as"] for rule in adapter["rules"]]
    # The config the pod gets is one the server accepts.
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["server.yaml"])
        f.flush()
        result = run(SERVER_BIN, "--config", f.name, "--model", "/nonexistent")
        assert result.returncode == 1 and "not found" in result.stderr  # config fine, model missing


# -- Prometheus and Grafana ----------------------------------------------------

def test_promtool_accepts_config_rules_and_the_servers_metrics(loaded):
    _, metrics = loaded
    prometheus_dir = os.path.join(DEPLOY, "prometheus")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"]):
        result = run("promtool", *args, cwd=prometheus_dir)
        assert result.returncode == 0, result.stdout + result.stderr
    result = run("promtool", "check", "metrics", input=metrics)
    assert result.returncode == 0, result.stdout + result.stderr


def exported_names(metrics):
    return {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE ")}


def used_names(text):
    names = set(re.findall(r"\biblip_[a-z_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_dashboard_and_rules_only_use_exported_metrics(loaded):
    _, metrics = loaded
    exported = exported_names(metrics)
    with open(os.path.join(DEPLOY, "grafana", "dashboard.json")) as f:
        dashboard = json.load(f)
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert used_names(exprs) and used_names(exprs) <= exported, used_names(exprs) - exported
    with open(os.path.join(DEPLOY, "prometheus", "rules.yml")) as f:
        rules = f.read()
    assert used_names(rules) <= exported, used_names(rules) - exported
    with open(os.path.join(DEPLOY, "k8s", "prometheus-adapter", "config.yaml")) as f:
        adapter = yaml.safe_load(yaml.safe_load(f)["data"]["config.yaml"])
    queries = " ".join(r["seriesQuery"] + r["metricsQuery"] for r in adapter["rules"])
    assert used_names(queries) <= exported


def prometheus_query(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]


def test_a_real_prometheus_scrapes_the_ttft_histogram(loaded, tmp_path):
    server, _ = loaded
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [os.path.join(DEPLOY, "prometheus", "rules.yml")],
        "scrape_configs": [{"job_name": "iblip-server",
                            "static_configs": [{"targets": [server.metrics_address]}]}]}))
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        count, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                result = prometheus_query(port, "iblip_time_to_first_token_seconds_count")
                if result:
                    count = float(result[0]["value"][1])
                    if count == REQUESTS:
                        break
            except OSError:
                pass  # not listening yet
            time.sleep(0.5)
        assert count == REQUESTS
        assert prometheus_query(port, 'up{job="iblip-server"}')[0]["value"][1] == "1"
    finally:
        process.terminate()
        process.wait(timeout=30)
