"""deploy/: the container recipes and the Kubernetes manifests, checked
offline with the real tools. Every kustomization is rendered by kubectl and
validated strictly (unknown fields fail); the numbers that must agree across
files (ports, grace periods and drain, memory and model size, the model's path
from the export Job to the pods, selectors) are checked in every overlay; the
Dockerfile is linted and its package lists checked against what the binaries
and a real export load. No container engine runs here, so the images
themselves are not built."""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import yaml

from server_harness import BUILD_DIR, REPO_DIR, SERVER_BIN

DEPLOY = os.path.join(REPO_DIR, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
VALIDATE = os.path.join(DEPLOY, "validate")
DOCKERFILE = os.path.join(DEPLOY, "docker", "Dockerfile")
CUDA_DOCKERFILE = os.path.join(DEPLOY, "docker", "Dockerfile.cuda")
FIXTURES_DIR = os.environ.get("IBLIP_FIXTURES_DIR", os.path.join(REPO_DIR, "../shared/fixtures"))
GiB = 1 << 30
MiB = 1 << 20

# Parameters of the Salesforce checkpoints, counted on this repository's own
# modeling code (model/python/iblip_model/modeling) with the published
# configs: vision 986.0 M + Q-Former 185.7 M + the language model.
CHECKPOINT_PARAMETERS = {
    "instructblip-vicuna-7b": 7_913_210_624,
    "instructblip-vicuna-13b": 14_191_448_832,
    "instructblip-flan-t5-xl": 4_022_969_088,
    "instructblip-flan-t5-xxl": 12_310_119_168,
}
BYTES_PER_PARAMETER = {"fp32": 4, "bf16": 2}
RUNTIME_HEADROOM = 2 * GiB  # libtorch, gRPC, activations, allocator slack
GPU_HEADROOM = 3 * GiB  # CUDA context, cuBLAS workspaces, activations, allocator slack
LARGEST_FILE = 10e9  # Hugging Face's largest default shard of a checkpoint


def run(*args, timeout=300, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


# -- rendering -----------------------------------------------------------------

def kustomizations():
    """Every kustomization under deploy/k8s (components are rendered through
    the overlays that use them)."""
    found = []
    for path in sorted(glob.glob(os.path.join(K8S, "**", "kustomization.yaml"), recursive=True)):
        with open(path) as f:
            if yaml.safe_load(f).get("kind", "Kustomization") == "Kustomization":
                found.append(os.path.relpath(os.path.dirname(path), K8S))
    return found


def render(path):
    result = run("kubectl", "kustomize", os.path.join(K8S, path))
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered():
    return {path: render(path) for path in kustomizations()}


def objects(text):
    return [d for d in yaml.safe_load_all(text) if d]


def validate(texts, tmp_path):
    """node deploy/validate/k8s.mjs over several YAML streams at once (one
    TypeScript program for all of them)."""
    paths = []
    for i, text in enumerate(texts):
        path = tmp_path / f"manifests-{i}.yaml"
        path.write_text(text)
        paths.append(str(path))
    return run("node", os.path.join(VALIDATE, "k8s.mjs"), *paths)


def serving(rendered):
    """(path, objects) of every kustomization that runs the server."""
    return [(path, objects(text)) for path, text in rendered.items()
            if any(o["kind"] == "Deployment" for o in objects(text))]


def one(docs, kind, name=None):
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, (kind, name, len(matches))
    return matches[0]


def server_container(docs):
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "server")


def server_config(docs):
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and "server.yaml" in d.get("data", {}))
    return yaml.safe_load(config_map["data"]["server.yaml"])


def quantity(value):
    """Kubernetes memory quantity -> bytes."""
    units = {"Ki": 1 << 10, "Mi": MiB, "Gi": GiB, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match, value
    return float(match.group(1)) * units.get(match.group(2), 1)


def test_kustomizations_cover_base_export_and_each_model_overlay(rendered):
    paths = set(rendered)
    assert {"base", "model-export"} <= paths
    models = {p.split("/")[1] for p in paths if p.startswith("overlays/")}
    assert models >= {"vicuna-7b", "flan-t5-xl"}
    for model in models:  # each model: its export step and its serving step
        assert {f"overlays/{model}", f"overlays/{model}/model"} <= paths
    used = set()
    for path in paths:
        with open(os.path.join(K8S, path, "kustomization.yaml")) as f:
            used |= {os.path.basename(c) for c in yaml.safe_load(f).get("components", [])}
    assert used == set(os.listdir(os.path.join(K8S, "components"))), "a component no overlay renders"


def test_every_kustomization_renders_and_validates_strictly(rendered, tmp_path):
    result = validate(rendered.values(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(objects(text)) for text in rendered.values())
    assert sum(line.startswith("ok ") for line in result.stdout.splitlines()) == count


def test_strict_validation_catches_unknown_fields_and_wrong_types(rendered, tmp_path):
    def rename_readiness_probe(container, pod):
        container["readinesProbe"] = container.pop("readinessProbe")

    def misspell_grace_period(container, pod):
        pod["terminationGracePeriod"] = pod.pop("terminationGracePeriodSeconds")

    def quote_a_port(container, pod):
        container["ports"][0]["containerPort"] = "50051"

    mistakes = {"readinesProbe": rename_readiness_probe,
                "terminationGracePeriod": misspell_grace_period,
                "containerPort": quote_a_port}
    docs = []
    for field, mistake in mistakes.items():
        deployment = one(objects(rendered["base"]), "Deployment")
        deployment["metadata"]["name"] = f"broken-{field}"
        pod = deployment["spec"]["template"]["spec"]
        mistake(pod["containers"][0], pod)
        docs.append(deployment)
    docs.append(one(objects(rendered["base"]), "Deployment"))  # and one right
    result = validate([yaml.safe_dump_all(docs)], tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    for field in mistakes:
        assert any(line.startswith(f"INVALID apps/v1 Deployment/broken-{field}:") and field in line
                   for line in lines), result.stdout
    assert "ok apps/v1 Deployment/iblip-server" in lines


def test_strict_validation_covers_custom_resources(rendered, tmp_path):
    docs = objects(rendered["overlays/vicuna-7b"])
    one(docs, "PodMonitor")["spec"]["podMetricEndpoints"] = []
    one(docs, "GRPCRoute")["spec"]["rules"][0]["backendRef"] = {}
    one(docs, "VolumeSnapshot")["spec"]["sourcePVC"] = "x"
    result = validate([yaml.safe_dump_all(docs)], tmp_path)
    assert result.returncode == 1
    for field in ("podMetricEndpoints", "backendRef", "sourcePVC"):
        assert field in result.stdout, result.stdout


# -- the pods ----------------------------------------------------------------------

def test_selectors_pick_exactly_the_server_pods(rendered):
    for path, docs in serving(rendered):
        deployment = one(docs, "Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        # The export Job's pods share the namespace: none of these may pick them.
        export = "/".join(path.split("/")[:2] + ["model"]) if path.startswith("overlays/") else "model-export"
        others = [d["spec"]["template"]["metadata"]["labels"]
                  for d in objects(rendered[export]) if d["kind"] == "Job"]
        assert others, path

        def selects(selector, pod_labels):
            return all(pod_labels.get(k) == v for k, v in selector.items())

        selectors = [d["spec"]["selector"] for d in docs if d["kind"] == "Service"]
        selectors += [d["spec"]["selector"]["matchLabels"] for d in docs
                      if d["kind"] in ("PodDisruptionBudget", "PodMonitor")]
        selectors += [d["spec"]["podSelector"]["matchLabels"] for d in docs if d["kind"] == "NetworkPolicy"]
        selectors.append(deployment["spec"]["selector"]["matchLabels"])
        for selector in selectors:
            assert selector and selects(selector, labels), (path, selector)
            assert not any(selects(selector, job) for job in others), (path, selector)
        hpa = one(docs, "HorizontalPodAutoscaler")
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": deployment["metadata"]["name"]}


def test_the_autoscaler_owns_the_replica_count_and_drains_take_one_pod_at_a_time(rendered):
    for path, docs in serving(rendered):
        assert "replicas" not in one(docs, "Deployment")["spec"], path
        assert one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2, path
        budget = one(docs, "PodDisruptionBudget")["spec"]
        assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget, path


def test_grpc_http_and_metrics_ports_are_open_end_to_end(rendered):
    with open(DOCKERFILE) as f:
        exposed = set(re.search(r"^EXPOSE (.+)$", f.read(), re.M).group(1).split())
    for path, docs in serving(rendered):
        config = server_config(docs)
        assert config["http"]["enabled"] is True, path
        wanted = {"grpc": config["port"], "http": config["http"]["port"], "metrics": config["metrics_port"]}
        assert wanted == {"grpc": 50051, "http": 8080, "metrics": 9090}
        assert {str(p) for p in wanted.values()} <= exposed
        _, container = server_container(docs)
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == wanted, path
        service = one(docs, "Service", "iblip-server")
        assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {n: n for n in wanted}
        headless = one(docs, "Service", "iblip-server-headless")
        assert headless["spec"]["clusterIP"] == "None"
        assert {p["port"] for p in headless["spec"]["ports"]} == {50051, 8080}
        policy = one(docs, "NetworkPolicy")["spec"]
        open_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
        assert open_ports == {50051, 8080, 9090}, path
        assert policy["egress"] == [], path


def probe_target(probe):
    """(service name, TLS CA file or None) a probe checks."""
    if "grpc" in probe:
        return probe["grpc"].get("service", ""), None
    command = probe["exec"]["command"]
    assert command[:2] == ["/usr/local/bin/iblip-client", "health"]
    option = lambda name: command[command.index(name) + 1] if name in command else None  # noqa: E731
    return option("--service") or "", option("--tls-ca")


def test_probes_check_warm_up_readiness_and_a_stalled_engine(rendered):
    for path, docs in serving(rendered):
        pod, container = server_container(docs)
        startup, readiness, liveness = (container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
        assert probe_target(startup)[0] == ""  # SERVING after the warm-up
        assert probe_target(readiness)[0] == "iblip.v1.InstructBlipService"
        assert probe_target(liveness)[0] == "liveness"  # not failed by a drain
        assert readiness["failureThreshold"] >= 3, "one slow reply must not unready a pod"
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        assert server_config(docs)["engine_stall_timeout_s"] > 0
        # Over TLS (kubelet gRPC probes are plaintext) the probes go through
        # iblip-client, trusting the CA of the certificate the server serves.
        tls_args = dict(zip(container["args"][::2], container["args"][1::2]))
        cas = {probe_target(p)[1] for p in (startup, readiness, liveness)}
        if "--tls.cert-file" in tls_args:
            assert all("exec" in p for p in (startup, readiness, liveness)), path
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            secret_dir = os.path.dirname(tls_args["--tls.cert-file"])
            assert os.path.dirname(tls_args["--tls.key-file"]) == secret_dir
            assert cas == {os.path.join(secret_dir, "ca.crt")}, path
            volume = next(v for v in pod["volumes"] if v["name"] == mounts[secret_dir])
            assert volume["secret"]["secretName"] == "iblip-tls"
        else:
            assert cas == {None} and all("grpc" in p for p in (startup, readiness, liveness)), path


def test_drain_fits_the_grace_period_and_every_generation_fits_the_drain(rendered):
    for path, docs in serving(rendered):
        pod, container = server_container(docs)
        config = server_config(docs)
        pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        drain = config["drain_timeout_s"]
        longest = config["limits"]["max_request_time_s"]
        assert 0 < longest <= drain, path
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10, path
        # GOAWAY after max_connection_age_s must not cut a generation either.
        assert config["max_connection_age_grace_s"] >= longest, path


def test_identity_security_and_spreading(rendered):
    for path, docs in serving(rendered):
        pod, container = server_container(docs)
        account = one(docs, "ServiceAccount", pod["serviceAccountName"])
        assert account["automountServiceAccountToken"] is False
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, path
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_pods_config_and_flags_are_ones_the_server_accepts(rendered, tmp_path):
    for path, docs in serving(rendered):
        _, container = server_container(docs)
        config = tmp_path / "server.yaml"
        config.write_text(yaml.safe_dump(server_config(docs)))
        args = list(container["args"])
        args[args.index("--model") + 1] = "/nonexistent"
        result = run(SERVER_BIN, "--config", str(config), *args, timeout=60)
        assert result.returncode == 1 and "not found" in result.stderr, (path, result.stderr)


def test_the_autoscaler_metrics_come_from_the_adapter(rendered):
    with open(os.path.join(K8S, "prometheus-adapter", "config.yaml")) as f:
        adapter = yaml.safe_load(yaml.safe_load(f)["data"]["config.yaml"])
    offered = {rule["name"]["as"] for rule in adapter["rules"]}
    for path, docs in serving(rendered):
        metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
        names = {m["pods"]["metric"]["name"] for m in metrics}
        assert names == {"iblip_queue_wait_seconds", "iblip_queue_fill_ratio"}, path
        assert names <= offered


def test_guaranteed_qos_where_the_component_is_used(rendered):
    for path in rendered:
        with open(os.path.join(K8S, path, "kustomization.yaml")) as f:
            components = yaml.safe_load(f).get("components", [])
        if not any(c.endswith("guaranteed-qos") for c in components):
            continue
        _, container = server_container(objects(rendered[path]))
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], path
        assert set(resources["limits"]) == {"cpu", "memory"}


# -- a real model: export Job -> volume -> pods; memory ----------------------------

def model_overlays(rendered):
    return sorted(p for p in rendered if re.fullmatch(r"overlays/[^/]+", p))


def export_settings(docs):
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and "PACKAGE" in d.get("data", {}))
    return config_map["data"]


def test_the_exported_package_is_what_the_pods_mount_read_only(rendered):
    for path in model_overlays(rendered):
        serve, export = objects(rendered[path]), objects(rendered[f"{path}/model"])
        settings = export_settings(export)
        namespace = one(export, "Namespace")["metadata"]["name"]
        assert {d["metadata"].get("namespace") for d in serve} == {namespace}, path
        # The Job writes /models/$PACKAGE on the export volume ...
        job = one(export, "Job")["spec"]["template"]["spec"]
        exporter = job["containers"][0]
        mounts = {m["mountPath"]: m for m in exporter["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in job["volumes"] if "persistentVolumeClaim" in v}
        assert claims[mounts["/models"]["name"]] == "iblip-model-export"
        assert not mounts["/models"].get("readOnly")
        assert '--output "/models/$PACKAGE"' in exporter["command"][-1]
        assert '--dtype "$DTYPE"' in exporter["command"][-1]
        assert settings["DTYPE"] in BYTES_PER_PARAMETER
        # ... the overlay snapshots that volume into a ReadOnlyMany one ...
        snapshot = one(serve, "VolumeSnapshot")
        assert snapshot["spec"]["source"] == {"persistentVolumeClaimName": "iblip-model-export"}
        volume = one(serve, "PersistentVolumeClaim", "iblip-model")["spec"]
        assert volume["accessModes"] == ["ReadOnlyMany"]
        assert volume["dataSource"] == {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                        "name": snapshot["metadata"]["name"]}
        export_volume = one(export, "PersistentVolumeClaim", "iblip-model-export")["spec"]
        assert (quantity(volume["resources"]["requests"]["storage"])
                >= quantity(export_volume["resources"]["requests"]["storage"]))
        # ... which every replica mounts read-only, serving the package.
        pod, container = server_container(serve)
        model_volume = next(v for v in pod["volumes"] if v["name"] == "model")
        assert model_volume["persistentVolumeClaim"] == {"claimName": "iblip-model", "readOnly": True}
        mount = next(m for m in container["volumeMounts"] if m["name"] == "model")
        assert mount["readOnly"] is True
        args = container["args"]
        assert args[args.index("--model") + 1] == os.path.join(mount["mountPath"], settings["PACKAGE"])


def test_memory_limits_hold_the_weights_the_kv_budget_and_the_caches(rendered):
    for path in model_overlays(rendered):
        serve, export = objects(rendered[path]), objects(rendered[f"{path}/model"])
        settings = export_settings(export)
        checkpoint = settings["CHECKPOINT_REPO"].rstrip("/").rsplit("/", 1)[-1]
        weights = CHECKPOINT_PARAMETERS[checkpoint] * BYTES_PER_PARAMETER[settings["DTYPE"]]
        config = server_config(serve)
        on_device = (weights + config["scheduler"]["kv_cache_mib"] * MiB
                     + (config["cache"]["vision_cache_mib"] + config["cache"]["qformer_cache_mib"]) * MiB)
        pod, container = server_container(serve)
        limit = quantity(container["resources"]["limits"]["memory"])
        if "nvidia.com/gpu" in container["resources"]["limits"]:
            # The weights, KV cache and feature caches live in GPU memory;
            # the host holds the package on its way there.
            gpu = gpu_memory_floor(pod)
            assert gpu >= on_device + GPU_HEADROOM, \
                f"{path}: GPUs of {gpu / GiB:.1f} GiB < {(on_device + GPU_HEADROOM) / GiB:.1f} GiB needed"
            needed = weights + RUNTIME_HEADROOM
        else:
            needed = on_device + RUNTIME_HEADROOM
        assert limit >= needed, f"{path}: {limit / GiB:.1f} GiB < {needed / GiB:.1f} GiB needed"
        # Threads follow the CPU limit (runtime.num_threads 0): whole CPUs.
        assert config["runtime"]["num_threads"] == 0
        assert float(container["resources"]["limits"]["cpu"]).is_integer()


def gpu_memory_floor(pod):
    """Bytes of GPU memory every node the pod may land on has: its node
    affinity's lower bound on GPU Feature Discovery's nvidia.com/gpu.memory
    (MiB)."""
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    floors = []
    for term in terms["nodeSelectorTerms"]:  # any term may match: the weakest counts
        bounds = [int(e["values"][0]) for e in term["matchExpressions"]
                  if e["key"] == "nvidia.com/gpu.memory" and e["operator"] == "Gt"]
        assert bounds, "a node selector term without a GPU memory bound"
        floors.append(max(bounds) * MiB)
    return min(floors)


def test_gpu_overlays_take_a_gpu_and_serve_on_it_and_cpu_ones_do_not(rendered):
    gpu_paths = []
    for path, docs in serving(rendered):
        pod, container = server_container(docs)
        device = server_config(docs).get("runtime", {}).get("device", "cpu")
        if "nvidia.com/gpu" not in container["resources"]["limits"]:
            assert device == "cpu", path
            assert "cuda" not in container["image"], path
            continue
        gpu_paths.append(path)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1", path
        assert re.fullmatch(r"cuda(:0)?", device), (path, device)  # the one GPU it sees
        assert "-cuda" in container["image"], (path, container["image"])  # Dockerfile.cuda's image
        assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert gpu_paths == ["overlays/vicuna-7b-gpu", "overlays/vicuna-7b-gpu/server"]


def test_the_export_job_has_room_for_the_checkpoint_and_the_export(rendered):
    for path in model_overlays(rendered):
        export = objects(rendered[f"{path}/model"])
        settings = export_settings(export)
        checkpoint = settings["CHECKPOINT_REPO"].rstrip("/").rsplit("/", 1)[-1]
        parameters = CHECKPOINT_PARAMETERS[checkpoint]
        package = parameters * BYTES_PER_PARAMETER[settings["DTYPE"]]
        # The checkpoint as published (fp32) plus one weight file in flight.
        volume = one(export, "PersistentVolumeClaim", "iblip-checkpoint")["spec"]
        assert quantity(volume["resources"]["requests"]["storage"]) >= 4 * parameters + LARGEST_FILE, path
        volume = one(export, "PersistentVolumeClaim", "iblip-model-export")["spec"]
        assert quantity(volume["resources"]["requests"]["storage"]) >= 1.2 * package, path
        exporter = one(export, "Job")["spec"]["template"]["spec"]["containers"][0]
        peak = 2 * package + 2 * LARGEST_FILE + 0.3e9  # a bound fitted to measured exports (README)
        assert quantity(exporter["resources"]["limits"]["memory"]) >= peak, path
        job = one(export, "Job")["spec"]["template"]["spec"]
        assert job["automountServiceAccountToken"] is False
        assert job["securityContext"]["runAsNonRoot"] is True


# -- container -------------------------------------------------------------------

def dockerfile_stages(path=DOCKERFILE):
    """{stage name: [instruction lines]} with continuations joined."""
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = {}
    for chunk in re.split(r"^FROM ", text, flags=re.M)[1:]:
        lines = [line for line in chunk.splitlines() if line and not line.startswith("#")]
        name = lines[0].split(" AS ")[1].strip()
        stages[name] = ["FROM " + lines[0]] + lines[1:]
    return stages


def test_dockerfile_lints_clean():
    result = run("node", os.path.join(VALIDATE, "dockerfile.mjs"), DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The linter does find mistakes.
    with tempfile.NamedTemporaryFile("w", suffix=".Dockerfile") as bad:
        with open(DOCKERFILE) as f:
            bad.write(f.read().replace("COPY --from=build", "COPY --frm=build").replace("EXPOSE", "EXPOS"))
        bad.flush()
        result = run("node", os.path.join(VALIDATE, "dockerfile.mjs"), bad.name)
        assert result.returncode == 1 and "frm" in result.stdout and "EXPOS" in result.stdout


def test_dockerfile_stages_users_ports_and_health_check():
    stages = dockerfile_stages()
    assert list(stages) == ["build", "export", "runtime"]  # the default target is the server
    build, export, runtime = stages["build"], stages["export"], stages["runtime"]
    assert build[0] == "FROM debian:bookworm AS build"
    assert any("scripts/setup --build-only" in line for line in build)
    assert any("scripts/build" in line for line in build)
    for stage in (export, runtime):
        assert stage[0].startswith("FROM debian:bookworm-slim AS ")
        assert not any("scripts/setup" in line for line in stage)  # runtime packages only
        user = [line for line in stage if line.startswith("USER ")]
        assert user and user[-1].split()[1].split(":")[0] not in ("0", "root")
    assert "EXPOSE 50051 8080 9090" in runtime
    health = next(line for line in runtime if line.startswith("HEALTHCHECK"))
    command = json.loads(health.split(" CMD ", 1)[1])
    assert command[:2] == ["/usr/local/bin/iblip-client", "health"]
    assert any("/models/demo" in line for line in runtime)
    assert next(line for line in export if line.startswith("ENTRYPOINT")) == \
        'ENTRYPOINT ["/opt/iblip/model/export"]'
    # Every file copied from the build context exists.
    for stage in stages.values():
        for line in stage:
            if line.startswith("COPY ") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert os.path.exists(os.path.join(REPO_DIR, source)), source
    copy = next(line for line in build if "/out/models/demo" in line)
    assert "build/demo-model" in copy and "build/tiny-package" in copy


def test_cuda_dockerfile_builds_against_cuda_libtorch_and_serves_on_the_gpu():
    result = run("node", os.path.join(VALIDATE, "dockerfile.mjs"), CUDA_DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    stages = dockerfile_stages(CUDA_DOCKERFILE)
    assert list(stages) == ["build", "runtime"]
    build, runtime = stages["build"], stages["runtime"]
    assert build[0] == "FROM debian:bookworm AS build"
    built = next(line for line in build if "scripts/build" in line)
    assert "-DTorch_DIR=/opt/libtorch/share/cmake/Torch" in built
    assert any("libtorch-cxx11-abi-shared-with-deps" in line for line in build)
    assert runtime[0] == "FROM debian:bookworm-slim AS runtime"
    # Debian's CPU-only LibTorch stays out; every other runtime library of
    # the CPU image is there.
    cuda_packages = set(apt_install_list(runtime))
    assert "libtorch1.13" not in cuda_packages
    assert set(apt_install_list(dockerfile_stages()["runtime"])) - {"libtorch1.13"} <= cuda_packages
    assert "COPY --from=build /opt/libtorch/lib/ /opt/libtorch/lib/" in runtime
    user = [line for line in runtime if line.startswith("USER ")]
    assert user and user[-1].split()[1].split(":")[0] not in ("0", "root")
    entrypoint = json.loads(next(line for line in runtime if line.startswith("ENTRYPOINT")).split(" ", 1)[1])
    assert entrypoint[entrypoint.index("--runtime.device") + 1] == "cuda"
    with open(DOCKERFILE) as f:
        exposed = re.search(r"^EXPOSE (.+)$", f.read(), re.M).group(1)
    assert f"EXPOSE {exposed}" in runtime
    for line in build + runtime:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert os.path.exists(os.path.join(REPO_DIR, source)), source


def apt_install_list(stage):
    install = next(line for line in stage if "apt-get install" in line)
    return install.split("--no-install-recommends", 1)[1].split("&&")[0].split()


def apt_closure(packages):
    result = run("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                 "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *packages)
    assert result.returncode == 0, result.stderr
    names = {line.strip() for line in result.stdout.splitlines() if not line.startswith(" ")}
    return names | {n.split(":")[0] for n in names}


def owning_packages(paths):
    """{file: Debian package} for the files dpkg installed (others left
    out). One dpkg call: each reads the whole package database."""
    paths = sorted(set(paths))
    candidates = {p: [p, os.path.realpath(p)] for p in paths}  # /lib vs /usr/lib (usrmerge)
    result = run("dpkg", "-S", *{c for cs in candidates.values() for c in cs})
    owner_of = {}
    for line in result.stdout.splitlines():
        if ": " in line and not line.startswith("diversion by"):
            packages, path = line.split(": ", 1)
            owner_of[path] = packages.split(",")[0].split(":")[0].strip()
    return {p: next(owner_of[c] for c in cs if c in owner_of)
            for p, cs in candidates.items() if any(c in owner_of for c in cs)}


def test_runtime_image_packages_cover_every_library_the_server_loads():
    binaries = [SERVER_BIN, os.path.join(BUILD_DIR, "model", "iblip_spm_shim.so"),
                os.path.join(BUILD_DIR, "client", "iblip-client")]
    libraries = set()
    for binary in binaries:
        for line in run("ldd", binary).stdout.splitlines():
            parts = line.split("=>")
            if len(parts) == 2 and parts[1].strip().startswith("/"):
                libraries.add(parts[1].split()[0])
    needed = set(owning_packages(libraries).values())
    assert "libtorch1.13" in needed and "libgrpc++1.51" in needed  # ldd was read
    missing = needed - apt_closure(apt_install_list(dockerfile_stages()["runtime"]))
    assert not missing, f"runtime stage lacks {sorted(missing)}"


def test_export_image_packages_cover_every_module_a_real_export_imports(tmp_path):
    """Exports a fixture checkpoint with -X importtime (which the export's
    spawned worker inherits), resolves every top-level module either process
    imported to its file, and checks the export stage installs the Debian
    package of each one that is not in the image's copy of model/python."""
    checkpoint = os.path.join(FIXTURES_DIR, "checkpoints", "tiny-llama")
    result = run(sys.executable, "-X", "importtime", os.path.join(REPO_DIR, "model", "export"),
                 "--checkpoint", checkpoint, "--output", str(tmp_path / "package"), "--dtype", "bf16",
                 timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "package" / "manifest.json").exists()
    def top_level_imports(log):
        return {line.split("|")[-1].strip().split(".")[0]
                for line in log.splitlines() if line.startswith("import time:")}
    # What the interpreter imports before any code runs (site, and .pth
    # hooks of packages installed here only) is not the export's.
    startup = top_level_imports(run(sys.executable, "-X", "importtime", "-c", "pass").stderr)
    imported = top_level_imports(result.stderr) - startup - {"imported package"}
    locate = run(sys.executable, "-c", "import importlib.util, json, sys\n"
                 "out = {}\n"
                 "for name in sys.argv[1:]:\n"
                 "    spec = importlib.util.find_spec(name)\n"
                 "    out[name] = spec.origin if spec and spec.origin not in (None, 'built-in', 'frozen') else None\n"
                 "print(json.dumps(out))", *sorted(imported),
                 env={**os.environ, "PYTHONPATH": os.path.join(REPO_DIR, "model", "python")})
    files = {name: path for name, path in json.loads(locate.stdout).items() if path}
    assert "torch" in files and "sentencepiece" in files  # the import log was read
    ours = {name for name, path in files.items() if path.startswith(os.path.join(REPO_DIR, "model"))}
    assert ours == {"iblip_model"}, ours  # copied into the image from model/python
    owners = owning_packages([path for name, path in files.items() if name not in ours])
    unowned = set(files) - ours - {name for name, path in files.items() if path in owners}
    assert not unowned, f"modules from outside Debian packages: {sorted(unowned)}"
    packages = apt_install_list(dockerfile_stages()["export"])
    missing = set(owners.values()) - apt_closure(packages)
    assert not missing, f"export stage lacks {sorted(missing)}"
    assert {"git", "git-lfs"} <= set(packages)  # fetch-checkpoint


def dockerignore_patterns():
    with open(os.path.join(REPO_DIR, ".dockerignore")) as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line and not line.startswith("#")]


def dockerignored(path, patterns):
    """Docker's rule (moby/patternmatcher): a path is excluded when a pattern
    matches it or one of its parent directories; '**' spans directories,
    '*' and '?' stay within one; a later '!pattern' re-includes."""
    def regex(pattern):
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = regex(os.path.normpath(pattern.lstrip("!")).lstrip("/"))
        if any(compiled.match(c) for c in candidates):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_build_outputs_out_and_every_source_in():
    patterns = dockerignore_patterns()
    # What git ignores in this (built, tested) checkout: build/, caches, node_modules.
    ignored = run("git", "-C", REPO_DIR, "ls-files", "--others", "--ignored", "--exclude-standard",
                  "--directory").stdout.split()
    assert any(p.startswith("build/") for p in ignored)  # the checkout was built
    leaking = [p for p in ignored if not dockerignored(p.rstrip("/"), patterns)]
    assert not leaking, f"the image build would copy {leaking}"
    assert dockerignored(".git", patterns)
    tracked = run("git", "-C", REPO_DIR, "ls-files").stdout.split()
    dropped = [p for p in tracked if dockerignored(p, patterns)]
    assert not dropped, f".dockerignore drops sources: {dropped}"
    # The matcher itself: directory patterns cover their contents, '**' any depth.
    assert dockerignored("build/server/iblip-server", ["build"])
    assert not dockerignored("src/build/x", ["build"])
    assert dockerignored("a/b/__pycache__/x.pyc", ["**/__pycache__"])
    assert not dockerignored("build-x/y", ["build-*", "!build-x"])


# -- fetch-checkpoint (the export Job's init container) ------------------------------

FETCH = os.path.join(DEPLOY, "docker", "fetch-checkpoint")


def test_fetch_checkpoint_passes_shellcheck():
    result = run("shellcheck", FETCH)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def checkpoint_repo(tmp_path):
    """A local git repository shaped like a Hugging Face one, and a PATH with a
    stand-in git-lfs that records how it was called (no LFS server here)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text('{"model_type": "instructblip"}')
    (repo / "model.safetensors").write_text("pointer")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "weights"]):
        assert run("git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                   *args).returncode == 0
    tools = tmp_path / "bin"
    tools.mkdir()
    lfs = tools / "git-lfs"
    lfs.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/lfs-calls\n'
                   '[ "$1" = ls-files ] && echo model.safetensors\nexit 0\n')
    lfs.chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "CHECKPOINT_REPO": f"file://{repo}"}
    return tmp_path, env


def test_fetch_checkpoint_clones_once_and_leaves_no_partial_checkpoint(checkpoint_repo):
    tmp_path, env = checkpoint_repo
    dest = tmp_path / "checkpoint" / "model"
    dest.parent.mkdir()
    result = run(FETCH, str(dest), env=env)
    assert result.returncode == 0, result.stderr
    assert (dest / "config.json").exists() and (dest / "model.safetensors").exists()
    assert not (dest / ".git").exists() and not (tmp_path / "checkpoint" / "model.partial").exists()
    assert (tmp_path / "lfs-calls").read_text().splitlines() == [
        "ls-files --name-only --include *.safetensors,*.model",  # what to fetch,
        "pull --include model.safetensors"]  # one file at a time
    # Present now: a second run (a retried Job) fetches nothing.
    again = run(FETCH, str(dest), env={**env, "CHECKPOINT_REPO": "file:///nonexistent"})
    assert again.returncode == 0 and "not fetching" in again.stdout


def test_fetch_checkpoint_fails_clearly(checkpoint_repo):
    tmp_path, env = checkpoint_repo
    dest = tmp_path / "model"
    unset = {k: v for k, v in env.items() if k != "CHECKPOINT_REPO"}
    result = run(FETCH, str(dest), env=unset)
    assert result.returncode == 1 and "CHECKPOINT_REPO is not set" in result.stderr
    (tmp_path / "repo" / "config.json").unlink()
    git = ["git", "-C", str(tmp_path / "repo"), "-c", "user.name=t", "-c", "user.email=t@t"]
    assert run(*git, "commit", "-q", "-am", "no config").returncode == 0
    result = run(FETCH, str(dest), env=env)
    assert result.returncode == 1 and "not a checkpoint" in result.stderr
    assert not dest.exists()
