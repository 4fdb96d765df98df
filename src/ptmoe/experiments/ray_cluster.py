"""The Ray cluster of `ptmoe compare --executor ray`, checked before any run starts, one line each: Ray
not installed, an --address no cluster answers at, resources no node has, and on a cluster a run store
some node does not see (a marker file the driver writes must be visible from every node)."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..config.schema import ConfigError

INSTALL = "pip install -e .[ray] (the `ray` extra)"


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a local Ray instance (or the one this process already joined)
    gpus_per_run: float = 0.0
    cpus_per_run: float = 1.0
    retries: int = 1

    @classmethod
    def from_args(cls, args) -> RayOptions:
        opts = cls(
            args.address,
            0.0 if args.gpus_per_run is None else args.gpus_per_run,
            1.0 if args.cpus_per_run is None else args.cpus_per_run,
            1 if args.retries is None else args.retries,
        )
        opts.check()
        return opts

    def check(self) -> None:
        if not self.cpus_per_run > 0:
            raise ConfigError(f"--cpus-per-run: must be > 0, got {self.cpus_per_run:g}")
        if self.gpus_per_run < 0 or (self.gpus_per_run > 1 and self.gpus_per_run != int(self.gpus_per_run)):
            raise ConfigError(f"--gpus-per-run: a fraction of one GPU or a whole number, got {self.gpus_per_run:g}")
        if self.retries < 0:
            raise ConfigError(f"--retries: must be >= 0, got {self.retries}")

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_run))


# ---- before any run: Ray, the cluster, its resources, the shared store -------------------------------------
def import_ray():
    try:
        # the optional `ray` extra
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray: Ray is not installed; {INSTALL}") from None
    return ray


def check_reachable(address: str) -> None:
    """A host:port (or ray://host:port) address must answer, at once, before Ray waits on it."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None


def connect(opts: RayOptions):
    """The ray module, joined to the cluster (a new local one when no address is given)."""
    ray = import_ray()
    if opts.address:
        check_reachable(opts.address)
    if ray.is_initialized():  # this process already joined one (a notebook, the tests)
        return ray
    try:
        if opts.address:
            ray.init(address=opts.address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError... : one line
        where = f"--address {opts.address}" if opts.address else "--executor ray"
        raise ConfigError(
            f"{where}: cannot start or join Ray: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    return ray


def alive_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def check_resources(ray, opts: RayOptions) -> None:
    """Some node must hold one run's CPUs and GPUs, or every task would wait forever."""
    nodes = alive_nodes(ray)
    fits = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0) >= opts.cpus_per_run and n["Resources"].get("GPU", 0) >= opts.gpus_per_run
    ]
    if not fits:
        have = ", ".join(
            f"{n['NodeManagerAddress']}: {n['Resources'].get('CPU', 0):g} CPU {n['Resources'].get('GPU', 0):g} GPU"
            for n in nodes
        )
        raise ConfigError(
            f"--cpus-per-run {opts.cpus_per_run:g} --gpus-per-run {opts.gpus_per_run:g}: no node of the Ray "
            f"cluster has that much ({have or 'no node'})"
        )


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def nodes_missing(ray, path: Path, token: str) -> list[str]:
    """The addresses of the nodes on which `path` does not hold `token` (one small task per node)."""
    # the optional `ray` extra
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_sees)
    nodes = alive_nodes(ray)
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            str(path), token
        )
        for n in nodes
    ]
    return [n["NodeManagerAddress"] for n, seen in zip(nodes, ray.get(refs, timeout=120)) if not seen]


def check_shared_store(ray, root: Path) -> None:
    """On a cluster, every node must see the run store at the same path: a marker file written here."""
    folder = root.resolve()
    marker = folder / f".store-check-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex
    marker.write_text(token)
    try:
        missing = nodes_missing(ray, marker, token)
    finally:
        marker.unlink(missing_ok=True)
    if missing:
        raise ConfigError(
            f"output_dir {folder}: not shared with the Ray node(s) {', '.join(missing)}: put it on storage every "
            f"node mounts at the same path (runs are stored and resumed there)"
        )
