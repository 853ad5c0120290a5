"""The Ray Serve application: the API ingress composed with the scoring deployments.

``build`` binds, with handles passed by ``.bind()`` composition: the faces deployment, one detector deployment
per enabled detector (:mod:`serve.deployments`), and the ``Api`` ingress that holds their handles and runs
the ensemble (:class:`serve.backends.ServeBackend`).

``deepwatch serve`` runs it on a local Ray (or the cluster at ``DEEPWATCH_RAY_ADDRESS``); on
Kubernetes a KubeRay RayService imports :func:`build` by its import path ``serve.app:build``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from deepwatch.settings import Settings, load_settings
from serve.api import build_api
from serve.backends import ServeBackend
from serve.context import configure
from serve.deployments import DetectorDeployment, Faces, detector_options, faces_options
from serve.ensemble import EnsembleConfig
from serve.routes_score import use_backend

log = logging.getLogger(__name__)

APP_NAME = "deepwatch"

# Built at import so @serve.ingress can wrap it; each replica configures its own copy.
_api = build_api()


@serve.deployment(name="api", ray_actor_options={"num_cpus": 0.25}, num_replicas=1)
@serve.ingress(_api)
class Api:
    def __init__(
        self,
        config: str | None,
        overrides: dict[str, Any],
        faces: DeploymentHandle | None = None,
        detectors: dict[str, DeploymentHandle] | None = None,
    ) -> None:
        # Settings are read again inside the replica (environment + config file), so secrets never
        # travel through Ray's object store in clear text.
        settings = load_settings(config, **overrides)
        configure(settings)
        if faces is not None and detectors:
            use_backend(ServeBackend(faces, detectors, EnsembleConfig.from_settings(settings)))


def build(args: dict[str, Any] | None = None) -> serve.Application:
    """The application builder (also the RayService import path)."""
    from serve.detectors.registry import available, select

    args = dict(args or {})
    config = args.pop("config", None)
    # read here only for the deployments' options (replicas, CPUs, batch sizes); every replica reads its own
    settings = load_settings(config, **args)
    classes = [r.cls for r in select(available(settings), settings.detectors or None)]
    detectors = {
        cls.name: DetectorDeployment.options(**detector_options(settings, cls.name, cls.runtime_env)).bind(
            cls.name, config, args
        )
        for cls in classes
    }
    faces = Faces.options(**faces_options(settings)).bind([cls.input_size for cls in classes], config, args)
    return Api.bind(config, args, faces, detectors)


def run_serve(settings: Settings, config: str | None, overrides: dict[str, Any]) -> None:
    """Start Ray (locally unless an address is set), deploy the app, block until SIGTERM/SIGINT."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp_dir: str | None = None
    if settings.ray_address:
        ray.init(address=settings.ray_address, logging_level=logging.WARNING)
    else:
        # Ray puts unix sockets under its temp dir; keep the path short (108-byte socket limit).
        temp_dir = tempfile.mkdtemp(prefix="dw-ray-", dir="/tmp")
        ray.init(
            num_cpus=settings.ray_num_cpus or os.cpu_count() or 2,
            include_dashboard=False,
            object_store_memory=128 * 2**20,
            _temp_dir=temp_dir,
            logging_level=logging.WARNING,
        )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": settings.api_host, "port": settings.api_port})
        serve.run(build({"config": config, **overrides}), name=APP_NAME, route_prefix="/")
        log.info("serve app %r is running on %s", APP_NAME, settings.api_url)
        stop.wait()
    finally:
        if temp_dir is None:
            serve.delete(APP_NAME)  # a shared cluster outlives us; our app should not
        # A local Ray takes Serve's actors with it; serve.shutdown() would only add ~6 s.
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
