"""The S3 DataStore, on the ``minio`` SDK.

All requests of a deployment share one bucket; a request's values are the objects under its
namespace ``faasflow/<flow>/<request>/``. (faas-flow made a bucket per request: S3 limits buckets
per account, creating one is slow, and its cleanup left the bucket behind whenever an object
remained.) ``cleanup`` lists the request's prefix and deletes what it found in bulk, 1000 keys
per request, until nothing is left.

The bucket is created on first use when it is missing and ``create_bucket`` allows it: a write
that meets ``NoSuchBucket`` creates it and writes again, so the common path costs nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import attrs
import certifi
import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name

from faasflow.errors import BackendError, ConfigurationError, KeyNotFound
from faasflow.interfaces import DataStore, Options
from faasflow_minio import OPTIONS

__all__ = ["MinioConfig", "MinioDataStore"]

T = TypeVar("T")

DEFAULT_BUCKET = "faasflow"
DEFAULT_TIMEOUT = 10.0
_MISSING_BUCKET = "NoSuchBucket"
_BUCKET_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
_CLIENT_ERRORS = (MinioException, urllib3.exceptions.HTTPError)


def _bool(raw: str, option: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(
        f"FAASFLOW_MINIO_{option.upper()}={raw!r} is not a boolean; use true or false"
    )


def object_key(text: str) -> str:
    """``text`` as an S3 object key the SDK accepts and every client reads back the same.

    HTTP clients drop ``.`` and ``..`` path segments (the minio SDK refuses them), so such a
    segment is percent-encoded, and so is every ``%`` to keep the mapping one-to-one. The mapping
    works segment by segment, so a namespace ending in ``/`` stays a prefix of its keys.
    """
    return "/".join(_SEGMENTS.get(s, s) for s in text.replace("%", "%25").split("/"))


_SEGMENTS = {".": "%2E", "..": "%2E%2E"}


@attrs.frozen
class MinioConfig:
    """Where and how to reach the S3 endpoint, resolved from the backend options."""

    endpoint: str
    secure: bool = False
    access_key: str | None = None
    secret_key: str | None = attrs.field(default=None, repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    region: str | None = None
    bucket: str = DEFAULT_BUCKET
    create_bucket: bool = True
    tls_verify: bool = True
    ca_cert: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def url(self) -> str:
        """The endpoint URL, as error messages show it."""
        return f"{'https' if self.secure else 'http'}://{self.endpoint}"

    @classmethod
    def from_options(cls, options: Options) -> MinioConfig:
        """Check and resolve ``FAASFLOW_MINIO_*`` options; raise ConfigurationError naming the
        variable at fault."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown minio option(s) {', '.join(unknown)} (from FAASFLOW_MINIO_"
                f"{unknown[0].upper()}); valid options: {', '.join(OPTIONS)}"
            )
        raw = (options.get("endpoint") or "").strip()
        if not raw:
            raise ConfigurationError(
                "the minio data store needs an endpoint: set FAASFLOW_MINIO_ENDPOINT (or "
                "AWS_ENDPOINT_URL_S3 / s3_url), e.g. minio.faasflow:9000"
            )
        parts = urlsplit(raw if "://" in raw else f"//{raw}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        scheme = parts.scheme.lower()
        if not parts.hostname or (port is not None and port < 0) or (
            scheme not in {"", "http", "https"}
        ) or parts.path not in {"", "/"}:
            raise ConfigurationError(
                f"S3 endpoint {raw!r} is not host[:port] or http(s)://host[:port] "
                "(FAASFLOW_MINIO_ENDPOINT); the bucket is set with FAASFLOW_MINIO_BUCKET"
            )
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        endpoint = host if port is None else f"{host}:{port}"
        secure = scheme == "https"
        if options.get("tls"):
            secure = _bool(options["tls"], "tls")

        access_key = options.get("access_key") or None
        secret_key = options.get("secret_key") or None
        if (access_key is None) != (secret_key is None):
            raise ConfigurationError(
                "S3 credentials need both FAASFLOW_MINIO_ACCESS_KEY and FAASFLOW_MINIO_SECRET_KEY"
                " (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the OpenFaaS secrets "
                "s3-access-key and s3-secret-key)"
            )
        bucket = (options.get("bucket") or DEFAULT_BUCKET).strip()
        try:
            check_bucket_name(bucket, strict=True)
        except ValueError as exc:
            raise ConfigurationError(
                f"FAASFLOW_MINIO_BUCKET={bucket!r} is not a valid S3 bucket name: {exc}"
            ) from None
        ca_cert = options.get("ca_cert") or None
        if ca_cert is not None and not Path(ca_cert).is_file():
            raise ConfigurationError(f"FAASFLOW_MINIO_CA_CERT={ca_cert!r}: no such file")
        timeout_raw = options.get("timeout") or str(DEFAULT_TIMEOUT)
        try:
            timeout = float(timeout_raw)
        except ValueError:
            timeout = 0.0
        if timeout <= 0:
            raise ConfigurationError(
                f"FAASFLOW_MINIO_TIMEOUT={timeout_raw!r} must be a positive number of seconds"
            )
        return cls(
            endpoint=endpoint,
            secure=secure,
            access_key=access_key,
            secret_key=secret_key,
            session_token=options.get("session_token") or None,
            region=options.get("region") or None,
            bucket=bucket,
            create_bucket=_bool(options.get("create_bucket") or "true", "create_bucket"),
            tls_verify=_bool(options.get("tls_verify") or "true", "tls_verify"),
            ca_cert=ca_cert,
            timeout=timeout,
        )

    def pool(self) -> urllib3.PoolManager:
        """The connection pool for the minio client: it reconnects, retries and times out as
        configured (the SDK's own pool waits five minutes per call)."""
        return urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=self.timeout, read=self.timeout),
            maxsize=32,
            cert_reqs="CERT_REQUIRED" if self.tls_verify else "CERT_NONE",
            ca_certs=self.ca_cert or certifi.where(),
            # connection errors are retried for every method (nothing was sent); read errors
            # and 5xx only for idempotent ones, which is every call this store makes but the
            # bulk delete
            retries=urllib3.Retry(
                total=3,
                connect=3,
                read=1,
                backoff_factor=0.05,
                status_forcelist=[500, 502, 503, 504],
                raise_on_status=False,
            ),
        )

    def client(self, http: urllib3.PoolManager) -> Minio:
        """A minio client on ``http`` (see :meth:`pool`)."""
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            session_token=self.session_token,
            secure=self.secure,
            region=self.region,
            http_client=http,
            cert_check=self.tls_verify,
        )


def _code(exc: BaseException | None) -> str:
    return (exc.code or "") if isinstance(exc, S3Error) else ""


def _describe(exc: BaseException, config: MinioConfig) -> str:
    if isinstance(exc, S3Error):
        said = f"{exc.code}: {exc.message}" if exc.message else str(exc.code)
        if exc.code in {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return (
                f"{said}; check FAASFLOW_MINIO_ACCESS_KEY and "
                "FAASFLOW_MINIO_SECRET_KEY (or the s3-access-key / s3-secret-key secrets)"
            )
        if exc.code == _MISSING_BUCKET:
            return (
                f"bucket {config.bucket!r} does not exist; create it, or allow faasflow to "
                "with FAASFLOW_MINIO_CREATE_BUCKET=true"
            )
        return said
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        reason = exc.reason
        if isinstance(reason, urllib3.exceptions.ReadTimeoutError | TimeoutError):
            return f"no answer within {config.timeout:g} s (FAASFLOW_MINIO_TIMEOUT)"
        return (
            f"cannot reach the S3 endpoint ({type(reason).__name__}: {reason}); is it running? "
            "Set FAASFLOW_MINIO_ENDPOINT (or AWS_ENDPOINT_URL_S3)"
        )
    return f"{type(exc).__name__}: {exc}"


@attrs.define(slots=False, eq=False)
class MinioDataStore(DataStore):
    """A :class:`~faasflow.DataStore` on S3-compatible storage (through the ``minio`` SDK)."""

    handles_shareable = True  # a scoped handle holds only its namespace

    config: MinioConfig
    _http: urllib3.PoolManager = attrs.field(init=False)
    _client: Minio = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # one connection pool (thread-safe), shared by every scoped handle
        self._http = self.config.pool()
        self._client = self.config.client(self._http)

    @classmethod
    def from_options(cls, options: Options) -> MinioDataStore:
        """Build the store from ``FAASFLOW_MINIO_*`` options (see
        :data:`faasflow_minio.OPTIONS`); nothing connects until the first operation."""
        return cls(MinioConfig.from_options(options))

    @property
    def prefix(self) -> str:
        """The object-key prefix of this request (its namespace, escaped)."""
        return object_key(self.namespace)

    # -- DataStore ----------------------------------------------------------------------------

    def set(self, key: str, value: bytes) -> None:
        name = self._name(key)
        bucket = self.config.bucket

        def put(client: Minio) -> None:
            client.put_object(bucket, name, io.BytesIO(value), len(value))

        try:
            self._call("set", name, put)
        except BackendError as exc:
            if _code(exc.__cause__) != _MISSING_BUCKET or not self.config.create_bucket:
                raise
            self._make_bucket()
            self._call("set", name, put)

    def get(self, key: str) -> bytes:
        name = self._name(key)
        bucket = self.config.bucket

        def fetch(client: Minio) -> bytes:
            response = client.get_object(bucket, name)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        try:
            return self._call("get", name, fetch)
        except BackendError as exc:
            code = _code(exc.__cause__)
            if code == "NoSuchKey" or (code == _MISSING_BUCKET and self.config.create_bucket):
                raise KeyNotFound(key, self._where) from None
            raise

    def delete(self, key: str) -> None:
        name = self._name(key)
        bucket = self.config.bucket
        self._call_tolerating_missing_bucket(
            "delete", name, lambda c: c.remove_object(bucket, name)
        )

    def cleanup(self) -> None:
        prefix, bucket = self.prefix, self.config.bucket

        def sweep(client: Minio) -> None:
            # Listing and deleting a page at a time would skip keys on stores whose listing
            # shifts under deletes; list everything first, then delete in bulk.
            names = [
                obj.object_name
                for obj in client.list_objects(bucket, prefix=prefix, recursive=True)
                if obj.object_name is not None
            ]
            if not names:
                return
            failed = list(client.remove_objects(bucket, (DeleteObject(n) for n in names)))
            if failed:
                first = failed[0]
                raise BackendError(
                    "minio",
                    f"cleanup {prefix!r}",
                    self.config.url,
                    f"{len(failed)} of {len(names)} objects were not deleted, e.g. "
                    f"{first.name!r}: {first.code} {first.message}",
                )

        self._call_tolerating_missing_bucket("cleanup", prefix, sweep)

    def close(self) -> None:
        self._http.clear()

    # -- internals ----------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"bucket {self.config.bucket!r} under {self.namespace}"

    def _name(self, key: str) -> str:
        return object_key(self.namespace + key)

    def _make_bucket(self) -> None:
        bucket = self.config.bucket

        def make(client: Minio) -> None:
            try:
                client.make_bucket(bucket, location=self.config.region)
            except S3Error as exc:
                if exc.code not in _BUCKET_EXISTS:  # another process was first
                    raise

        self._call("create bucket", bucket, make)

    def _call_tolerating_missing_bucket(
        self, operation: str, name: str, call: Callable[[Minio], None]
    ) -> None:
        try:
            self._call(operation, name, call)
        except BackendError as exc:
            # nothing to delete in a bucket that does not exist yet
            if _code(exc.__cause__) != _MISSING_BUCKET or not self.config.create_bucket:
                raise

    def _call(self, operation: str, name: str, call: Callable[[Minio], T]) -> T:
        """Run ``call``; every call this store makes is idempotent, so one that broke on the
        wire (after urllib3's own connection retries) is tried once more."""
        try:
            return call(self._client)
        except urllib3.exceptions.HTTPError:
            pass
        except MinioException as exc:
            raise self._error(operation, name, exc) from exc
        try:
            return call(self._client)
        except _CLIENT_ERRORS as exc:
            raise self._error(operation, name, exc) from exc

    def _error(self, operation: str, name: str, exc: BaseException) -> BackendError:
        return BackendError(
            "minio",
            f"{operation} {self.config.bucket}/{name}",
            self.config.url,
            _describe(exc, self.config),
        )
