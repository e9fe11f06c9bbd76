"""etcd v3 StateStore for faasflow: ``pip install faasflow-etcd``, then
``FAASFLOW_STATE_STORE=etcd``.

The client library (gRPC) is imported only when the backend is built, so installing the plugin
costs nothing to processes that use another store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import faasflow

if TYPE_CHECKING:
    from faasflow_etcd.store import EtcdStateStore

__all__ = ["ENV", "OPTIONS", "SECRETS", "faasflow_state_stores"]

#: Options, set as ``FAASFLOW_ETCD_<OPTION>``.
OPTIONS = {
    "endpoints": "comma-separated client URLs or host:port of etcd members "
    "(default 127.0.0.1:2379); https:// turns TLS on",
    "user": "user name for etcd authentication (ETCDCTL_USER may be user:password)",
    "password": "password for etcd authentication (OpenFaaS secret etcd-password)",
    "ca_cert": "file with the CA certificates that sign the etcd server certificate; turns TLS on",
    "cert": "client certificate file for mutual TLS (with key)",
    "key": "client key file for mutual TLS (with cert)",
    "tls": "true to use TLS with the system CA roots (default: on for https:// endpoints)",
    "timeout": "seconds one etcd call may take before it fails (default 5)",
}

#: etcdctl's own variables, honoured when the ``FAASFLOW_ETCD_*`` one is not set.
ENV = {
    "endpoints": ("ETCDCTL_ENDPOINTS",),
    "user": ("ETCDCTL_USER",),
    "password": ("ETCDCTL_PASSWORD",),
    "ca_cert": ("ETCDCTL_CACERT",),
    "cert": ("ETCDCTL_CERT",),
    "key": ("ETCDCTL_KEY",),
}

#: OpenFaaS secrets (files under the secret mount path).
SECRETS = {"password": "etcd-password"}


def _create(options: faasflow.Options) -> EtcdStateStore:
    from faasflow_etcd.store import EtcdStateStore

    return EtcdStateStore.from_options(options)


@faasflow.hookimpl
def faasflow_state_stores() -> Iterator[faasflow.Backend]:
    """Declare the ``etcd`` StateStore."""
    yield faasflow.Backend(
        "etcd",
        _create,
        summary="etcd v3: compare-and-swap in one transaction, prefix scan and cleanup",
        env=ENV,
        secrets=SECRETS,
        options=OPTIONS,
        shared="network",
    )
