"""S3 DataStore for faasflow (MinIO, Ceph RGW, AWS S3 or any S3-compatible storage):
``pip install faasflow-minio``, then ``FAASFLOW_DATA_STORE=minio``.

The client library is imported only when the backend is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import faasflow

if TYPE_CHECKING:
    from faasflow_minio.store import MinioDataStore

__all__ = ["ENV", "OPTIONS", "SECRETS", "faasflow_data_stores"]

#: Options, set as ``FAASFLOW_MINIO_<OPTION>``.
OPTIONS = {
    "endpoint": "S3 endpoint as host:port or URL (required); https:// turns TLS on",
    "access_key": "access key id (OpenFaaS secret s3-access-key)",
    "secret_key": "secret access key (OpenFaaS secret s3-secret-key)",
    "session_token": "session token for temporary credentials",
    "region": "bucket region (default: asked from the server once per process)",
    "bucket": "bucket that holds every request's data (default faasflow)",
    "create_bucket": "create the bucket on first use when it does not exist (default true)",
    "tls": "true to use https (default: from the endpoint scheme, else false)",
    "tls_verify": "false to skip verifying the server certificate (default true)",
    "ca_cert": "file with the CA certificates that sign the server certificate",
    "timeout": "seconds to connect, and to wait for each answer (default 10)",
}

#: The usual AWS and MinIO variables (and faas-flow's), honoured when ``FAASFLOW_MINIO_*`` is
#: unset; the first one set wins.
ENV = {
    "endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MINIO_ENDPOINT", "s3_url"),
    "access_key": ("AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY", "MINIO_ROOT_USER"),
    "secret_key": ("AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_ROOT_PASSWORD"),
    "session_token": ("AWS_SESSION_TOKEN",),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION", "s3_region"),
    "tls": ("s3_tls",),
    "ca_cert": ("AWS_CA_BUNDLE",),
}

#: OpenFaaS secrets (files under the secret mount path), as faas-flow named them.
SECRETS = {"access_key": "s3-access-key", "secret_key": "s3-secret-key"}


def _create(options: faasflow.Options) -> MinioDataStore:
    from faasflow_minio.store import MinioDataStore

    return MinioDataStore.from_options(options)


@faasflow.hookimpl
def faasflow_data_stores() -> Iterator[faasflow.Backend]:
    """Declare the ``minio`` DataStore."""
    yield faasflow.Backend(
        "minio",
        _create,
        summary="S3-compatible storage through the minio SDK: one bucket, a prefix per request",
        env=ENV,
        secrets=SECRETS,
        options=OPTIONS,
        shared="network",
    )
