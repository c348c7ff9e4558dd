"""deploy/prometheus, deploy/grafana and the autoscaler's metrics: the alert
rules' unit tests (promtool test rules: every alert fires when it should and
stays silent when it should not), proof that those tests catch the mistakes
the rules once had, promtool on the config and the server's /metrics, and a
real Prometheus scraping a running server that evaluates every recording
rule, every dashboard query and every prometheus-adapter query."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from server_harness import REPO_DIR, png_bytes, start_server, stop_server

DEPLOY = os.path.join(REPO_DIR, "deploy")
PROMETHEUS_DIR = os.path.join(DEPLOY, "prometheus")
REQUESTS = 7
QUEUE_SIZE = 48  # not the default: the capacity gauge must follow the config


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
    server = start_server("--scheduler.max-queue-size", str(QUEUE_SIZE))
    try:
        with Client(server.address, timeout=30) as client:
            for i in range(REQUESTS):
                client.generate_unary(png_bytes(color=(i * 30, 10, 10)), "describe", max_new_tokens=3)
        with urllib.request.urlopen(f"http://{server.metrics_address}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        yield server, metrics
    finally:
        assert stop_server(server) == 0, "".join(server.log)


# -- rules -----------------------------------------------------------------------

def test_promtool_accepts_config_rules_and_the_servers_metrics(loaded):
    _, metrics = loaded
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"]):
        result = run("promtool", *args, cwd=PROMETHEUS_DIR)
        assert result.returncode == 0, result.stdout + result.stderr
    result = run("promtool", "check", "metrics", input=metrics)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"iblip_queue_capacity {QUEUE_SIZE}" in metrics


def test_rule_unit_tests_pass():
    result = run("promtool", "test", "rules", "rules_test.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_cases_that_fire_and_cases_that_stay_silent():
    with open(os.path.join(PROMETHEUS_DIR, "rules.yml")) as f:
        alerts = {r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r}
    with open(os.path.join(PROMETHEUS_DIR, "rules_test.yml")) as f:
        cases = [c for t in yaml.safe_load(f)["tests"] for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts and fires == alerts and silent == alerts, (alerts - fires, alerts - silent)


# Mistakes the rules once made (issue #23), each of which the unit tests
# must catch: the same rules with one of them put back fail promtool.
MISTAKES = {
    "the job regex misses the Prometheus Operator's '<namespace>/<name>'":
        ('up{job=~"(.+/)?iblip-server"} == 0', 'up{job=~"iblip-server.*"} == 0'),
    "rejected API keys count as server errors":
        ('code=~"internal|unknown', 'code=~"unauthenticated|internal|unknown'),
    "errors summed across namespaces":
        ("sum by (namespace, job) (rate(iblip_requests_total", "sum (rate(iblip_requests_total"),
    "a hard-coded queue size, summed over replicas":
        ("expr: iblip_requests_waiting / iblip_queue_capacity",
         "expr: sum by (pod) (iblip_requests_waiting) / 256"),
    "latency quantiles over every namespace":
        ("sum by (namespace, job, le) (rate(iblip_time_to_first_token_seconds_bucket",
         "sum by (le) (rate(iblip_time_to_first_token_seconds_bucket"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_the_rule_tests_catch_each_old_mistake(mistake, tmp_path):
    right, wrong = MISTAKES[mistake]
    with open(os.path.join(PROMETHEUS_DIR, "rules.yml")) as f:
        rules = f.read()
    assert right in rules
    (tmp_path / "rules.yml").write_text(rules.replace(right, wrong))
    shutil.copy(os.path.join(PROMETHEUS_DIR, "rules_test.yml"), tmp_path)
    result = run("promtool", "test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode == 1 and "FAILED" in result.stdout + result.stderr, mistake


# -- metric names ----------------------------------------------------------------

def exported_names(metrics):
    return {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE ")}


def used_names(text):
    names = set(re.findall(r"\biblip_[a-z_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def dashboard():
    with open(os.path.join(DEPLOY, "grafana", "dashboard.json")) as f:
        return json.load(f)


def dashboard_queries():
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def adapter_rules():
    with open(os.path.join(DEPLOY, "k8s", "prometheus-adapter", "config.yaml")) as f:
        return yaml.safe_load(yaml.safe_load(f)["data"]["config.yaml"])["rules"]


def test_dashboard_rules_and_adapter_only_use_exported_metrics(loaded):
    _, metrics = loaded
    exported = exported_names(metrics)
    queries = " ".join(dashboard_queries())
    assert used_names(queries) and used_names(queries) <= exported, used_names(queries) - exported
    with open(os.path.join(PROMETHEUS_DIR, "rules.yml")) as f:
        rules = f.read()
    assert used_names(rules) <= exported, used_names(rules) - exported
    adapter = " ".join(r["seriesQuery"] + r["metricsQuery"] for r in adapter_rules())
    assert used_names(adapter) <= exported, used_names(adapter) - exported


def test_dashboard_filters_by_namespace_and_pod_and_shows_queue_errors_memory():
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "namespace", "pod"} <= set(variables)
    for name in ("namespace", "pod"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    for query in dashboard_queries():
        # Every selector of a server metric honours both variables.
        for selector in re.findall(r"\b(?:iblip_[a-z_]+|container_[a-z_]+|kube_[a-z_]+)\{([^}]*)\}", query):
            assert 'namespace=~"$namespace"' in selector and 'pod=~"$pod"' in selector, query
        assert re.search(r"\biblip_[a-z_]+(\[|\)|$| )", query) is None, f"unfiltered: {query}"
    titles = {p["title"]: p for p in board["panels"]}
    assert "by (pod)" in titles["Queue fill per pod"]["targets"][0]["expr"]
    assert "iblip_queue_capacity" in titles["Queue fill per pod"]["targets"][0]["expr"]
    assert "unauthenticated" not in titles["Error ratio"]["targets"][0]["expr"]
    assert "container_memory_working_set_bytes" in titles["Memory per pod"]["targets"][0]["expr"]
    positions = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in board["panels"]]
    assert len(set(positions)) == len(positions)


# -- a real Prometheus -----------------------------------------------------------

def prometheus_query(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)["data"]["result"]
    except urllib.error.HTTPError as e:
        if e.code == 400:  # the query does not parse
            raise AssertionError(f"{query}: {e.read().decode()}") from e
        raise  # 503 while Prometheus starts: wait_for tries again


def wait_for(port, query, accept, timeout=90):
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        try:
            result = prometheus_query(port, query)
            if accept(result):
                return result
        except OSError:
            pass  # not listening, or not ready (503), yet
        time.sleep(0.5)
    raise AssertionError(f"{query}: {result}")


def test_a_real_prometheus_evaluates_the_rules_dashboard_and_autoscaler_queries(loaded, tmp_path):
    server, _ = loaded
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [os.path.join(PROMETHEUS_DIR, "rules.yml")],
        "scrape_configs": [{"job_name": "iblip-server",
                            "static_configs": [{"targets": [server.metrics_address]}]}]}))
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        value = lambda result: float(result[0]["value"][1]) if result else None  # noqa: E731
        wait_for(port, "iblip_time_to_first_token_seconds_count",
                 lambda r: value(r) == REQUESTS)
        assert value(prometheus_query(port, 'up{job="iblip-server"}')) == 1
        # The recording rules the alerts and the dashboard read (the group
        # runs every 15 s).
        fill = wait_for(port, "iblip:queue_fill:ratio", bool, timeout=60)
        assert value(fill) == 0 and fill[0]["metric"]["instance"] == server.metrics_address
        assert value(prometheus_query(port, "iblip_queue_capacity")) == QUEUE_SIZE
        # Every dashboard query parses and runs ("All" namespaces and pods).
        for query in dashboard_queries():
            prometheus_query(port, query.replace("$__rate_interval", "1m")
                             .replace("$namespace", ".*").replace("$pod", ".*"))
        # The autoscaler's metrics, as prometheus-adapter would ask for this
        # pod: a number for each (idle: no waiting, a small mean wait).
        for rule in adapter_rules():
            query = (rule["metricsQuery"].replace("<<.LabelMatchers>>", 'job="iblip-server"')
                     .replace("<<.GroupBy>>", "instance"))
            result = wait_for(port, query, bool, timeout=30)
            assert 0 <= value(result) < 5, (rule["name"]["as"], result)
    finally:
        process.terminate()
        process.wait(timeout=30)
