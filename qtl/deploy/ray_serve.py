"""The same API as a Ray Serve application: replicas of the model store, each micro-batching.

    run_ray(["models/"], address="auto", replicas=4)    # what `qtl serve models/ --ray --address auto` runs

Each replica builds the app of `qtl.deploy.server.create_app` over its own `ModelStore` (so the routes,
limits, refusals and answers are the single-process server's), and Ray's HTTP proxy spreads requests
over the replicas. The checkpoints travel as bytes through Ray's object store, so replicas on other
nodes need no shared folder (backbones with ImageNet weights still need them on each node, as sweeps
do). Needs `qtl[ray,serve]`.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from qtl.deploy.batching import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_S, DEFAULT_WORKERS
from qtl.deploy.limits import ServeLimits
from qtl.deploy.models import checkpoint_paths

APP_NAME = "qtl"


class QtlReplica:
    """One replica: the checkpoints (name -> bytes) loaded into a store, served by the qtl app."""

    def __init__(
        self, checkpoints: dict[str, bytes], limits: ServeLimits, batching: dict, device: str
    ) -> None:
        from qtl.deploy.models import ModelStore
        from qtl.deploy.server import create_app

        with tempfile.TemporaryDirectory(prefix="qtl-replica-") as folder:
            paths = []
            for name, data in checkpoints.items():
                path = Path(folder) / name
                path.write_bytes(data)
                paths.append(path)
            store = ModelStore.load(paths, device)  # loading copies everything into memory
        self._qtl_app = create_app(store, limits, **batching)

    def __serve_build_asgi_app__(self):
        return self._qtl_app


def application(
    sources: Sequence[str | Path],
    limits: ServeLimits | None = None,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    workers: int = DEFAULT_WORKERS,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    device: str = "cpu",
):
    """The bound Ray Serve application: `replicas` copies of the store behind Ray's HTTP proxy. The
    checkpoints are `checkpoint_paths(sources)`, as the single-process server's (CheckpointError for two
    of one name), read before Ray is imported."""
    checkpoints = {path.name: path.read_bytes() for path in checkpoint_paths(sources)}
    from ray import serve

    deployment = serve.deployment(
        serve.ingress()(QtlReplica),
        name="QtlAPI",
        num_replicas=replicas,
        max_ongoing_requests=256,  # queue in the replica, where its micro-batcher gathers them
        ray_actor_options={"num_cpus": cpus_per_replica},
    )
    batching = {"max_batch": max_batch, "max_wait_s": max_wait_s, "workers": workers}
    return deployment.bind(checkpoints, limits or ServeLimits(), batching, device)


def run_ray(
    sources: Sequence[str | Path],
    limits: ServeLimits | None = None,
    *,
    address: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    blocking: bool = True,
    **options,
) -> None:
    """Start (or join, `address`) a Ray instance, start Serve's HTTP proxy on (host, port) and deploy the
    application at "/". With `blocking`, serve until Ctrl-C or SIGTERM, then shut Serve down (and the Ray
    instance, if started here). `options` go to `application`."""
    import ray
    from ray import serve

    app = application(sources, limits, **options)  # a checkpoint missing, or two of one name: before Ray
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        if blocking:
            _wait_for_stop()
    finally:
        if blocking:
            serve.shutdown()
            if started:
                ray.shutdown()


def _wait_for_stop() -> None:
    """Sleep until Ctrl-C or SIGTERM (what `docker stop` and process managers send)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
