"""The core conformance suite against the real S3 server (Ceph radosgw) of .ci/services."""

from __future__ import annotations

import pytest
from faasflow_minio.store import MinioDataStore
from s3_servers import shared_options

from faasflow.interfaces import DataStore
from faasflow.testing import DataStoreContract


@pytest.mark.integration
class TestMinioDataStore(DataStoreContract):
    def make_store(self) -> DataStore:
        return MinioDataStore.from_options(shared_options(bucket="faasflow-contract"))
