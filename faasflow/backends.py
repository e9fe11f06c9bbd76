"""Backend records: what a plugin declares through the hooks, and the four kinds."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from faasflow.interfaces import Options

__all__ = ["Backend", "Kind", "Sharing"]

#: How far a store's data reaches: one process, the processes of one host, or the network.
Sharing = Literal["process", "host", "network"]

_NAME = re.compile(r"^[a-z][a-z0-9]*$")


class Kind(str, enum.Enum):
    """The four kinds of backend, named as in ``FAASFLOW_<KIND>`` variables."""

    STATE_STORE = "state_store"
    DATA_STORE = "data_store"
    TRACER = "tracer"
    INVOKER = "invoker"

    @property
    def hook(self) -> str:
        """The hook that declares backends of this kind."""
        return f"faasflow_{self.value}s"

    @property
    def env_var(self) -> str:
        """The variable that selects a backend of this kind."""
        return f"FAASFLOW_{self.value.upper()}"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


def _normalise(name: str) -> str:
    return name.strip().lower()


def _check_name(_: object, __: attrs.Attribute[str], name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(
            f"backend name {name!r} must be lower-case letters and digits, starting with a letter"
            " (it becomes part of FAASFLOW_<NAME>_<OPTION> variable names)"
        )


@attrs.frozen
class Backend:
    """One named backend a plugin provides.

    ``factory`` builds the backend from its resolved options. ``env`` maps an option to the
    ecosystem's own variables that may set it (``{"address": ("CONSUL_HTTP_ADDR",)}``) and
    ``secrets`` maps an option to an OpenFaaS secret file name
    (``{"access_key": "s3-access-key"}``); ``FAASFLOW_<NAME>_<OPTION>`` always wins over both.

    ``shared`` says which processes see the same data through a store: ``"process"`` (memory),
    ``"host"`` (a local file: every process of one machine or container) or ``"network"`` (a
    server every replica reaches). The flow app refuses a store that cannot reach all its
    processes or replicas. A store that does not declare it is taken for ``"process"``: that
    is checked, not hoped. Tracers and invokers ignore it.
    """

    name: str = attrs.field(converter=_normalise, validator=_check_name)
    factory: Callable[[Options], Any]
    summary: str = ""
    env: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    secrets: Mapping[str, str] = attrs.field(factory=dict)
    options: Mapping[str, str] = attrs.field(factory=dict)
    """Documented options: name -> one-line description (shown by ``faasflow plugins``)."""
    shared: Sharing = attrs.field(default="process", validator=attrs.validators.in_(
        ("process", "host", "network")))


@attrs.frozen
class RegisteredBackend:
    """A backend as found in the registry: the record plus where it came from."""

    kind: Kind
    backend: Backend
    plugin: str
    distribution: str
    version: str

    @property
    def name(self) -> str:
        return self.backend.name
