"""Is a flow's store reachable from every process that serves it?

A DAG flow's iterations land on whichever gunicorn worker or replica the gateway picks, so the
StateStore and DataStore must reach all of them. Each store declares how far it reaches
(:attr:`faasflow.backends.Backend.shared`); this module compares that with how the flow is
deployed and refuses what cannot work, instead of answering 410 to half the iterations.
"""

from __future__ import annotations

from faasflow.backends import Kind, Sharing
from faasflow.errors import ConfigurationError
from faasflow.settings import EnvVars, Settings

__all__ = ["check_stores"]

_REACH: dict[Sharing, int] = {"process": 0, "host": 1, "network": 2}


def _needed(processes: int, replicas: int) -> Sharing:
    if replicas > 1:
        return "network"
    if processes > 1:
        return "host"
    return "process"


def check_stores(settings: Settings, *, processes: int = 1) -> None:
    """Raise :class:`ConfigurationError` when a configured store cannot be seen by every one of
    ``processes`` worker processes and ``settings.replicas`` replicas."""
    needed = _needed(processes, settings.replicas)
    if needed == "process":
        return
    from faasflow.plugins import Registry

    registry = Registry.shared(settings)
    for kind in (Kind.STATE_STORE, Kind.DATA_STORE):
        name = settings.backend_name(kind)
        shared = registry.get(kind, name).backend.shared
        if _REACH[shared] >= _REACH[needed]:
            continue
        if needed == "network":
            why = (f"{EnvVars.REPLICAS}={settings.replicas} replicas are declared and the "
                   f"{kind.label} {name!r} is {_WORDS[shared]}")
            fix = (f"set {kind.env_var} to a store every replica reaches (for example "
                   f"{_EXAMPLES[kind]}), or run one replica ({EnvVars.REPLICAS}=1 and the "
                   "label com.openfaas.scale.max: 1)")
        else:
            why = (f"this flow runs in {processes} worker processes and the {kind.label} "
                   f"{name!r} is {_WORDS[shared]}")
            fix = (f"set {kind.env_var} to a shared store ({_EXAMPLES[kind]}), or serve "
                   "the flow from one worker process")
        raise ConfigurationError(f"{why}: iterations reaching another process would find no "
                                 f"request; {fix}")


_WORDS: dict[Sharing, str] = {
    "process": "local to one process",
    "host": "local to one host",
    "network": "shared over the network",
}
_EXAMPLES = {
    Kind.STATE_STORE: "sqlite on one host, etcd or consul across replicas",
    Kind.DATA_STORE: "sqlite or filesystem on one host, minio across replicas",
}
