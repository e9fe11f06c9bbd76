"""Consul KV StateStore for faasflow: ``pip install faasflow-consul``, then
``FAASFLOW_STATE_STORE=consul``.

The client library is imported only when the backend is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import faasflow

if TYPE_CHECKING:
    from faasflow_consul.store import ConsulStateStore

__all__ = ["ENV", "OPTIONS", "SECRETS", "faasflow_state_stores"]

#: Options, set as ``FAASFLOW_CONSUL_<OPTION>``.
OPTIONS = {
    "address": "host:port or URL of the Consul agent's HTTP API (default 127.0.0.1:8500); "
    "https:// turns TLS on",
    "token": "ACL token sent as X-Consul-Token (OpenFaaS secret consul-token)",
    "token_file": "file that holds the ACL token",
    "ssl": "true to use https (default: from the address scheme)",
    "ssl_verify": "false to skip verifying the agent's certificate (default true)",
    "ca_cert": "file with the CA certificates that sign the agent's certificate",
    "client_cert": "client certificate file for mutual TLS",
    "client_key": "client key file for mutual TLS (with client_cert)",
    "datacenter": "datacenter to use (default: the agent's own)",
    "consistency": "read mode, consistent (default) or default; stale reads are refused",
    "timeout": "seconds one Consul call may take before it fails (default 5)",
}

#: Consul's own variables (and faas-flow's names), honoured when ``FAASFLOW_CONSUL_*`` is unset.
ENV = {
    "address": ("CONSUL_HTTP_ADDR", "consul_url"),
    "token": ("CONSUL_HTTP_TOKEN",),
    "token_file": ("CONSUL_HTTP_TOKEN_FILE",),
    "ssl": ("CONSUL_HTTP_SSL",),
    "ssl_verify": ("CONSUL_HTTP_SSL_VERIFY",),
    "ca_cert": ("CONSUL_CACERT",),
    "client_cert": ("CONSUL_CLIENT_CERT",),
    "client_key": ("CONSUL_CLIENT_KEY",),
    "datacenter": ("consul_dc",),
}

#: OpenFaaS secrets (files under the secret mount path).
SECRETS = {"token": "consul-token"}


def _create(options: faasflow.Options) -> ConsulStateStore:
    from faasflow_consul.store import ConsulStateStore

    return ConsulStateStore.from_options(options)


@faasflow.hookimpl
def faasflow_state_stores() -> Iterator[faasflow.Backend]:
    """Declare the ``consul`` StateStore."""
    yield faasflow.Backend(
        "consul",
        _create,
        summary="Consul KV: compare-and-swap on ModifyIndex, recursive scan and cleanup",
        env=ENV,
        secrets=SECRETS,
        options=OPTIONS,
        shared="network",
    )
