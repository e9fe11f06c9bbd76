"""faasflow-tower: the dashboard of faasflow's flows, served by ``faasflow up`` at ``/ui/`` and
deployable on OpenFaaS as one function (``faasflow_tower.openfaas:create_app``)."""

from __future__ import annotations

from faasflow_tower.app import TowerApp
from faasflow_tower.config import TowerConfig

__all__ = ["TowerApp", "TowerConfig", "__version__"]

__version__ = "0.1.0"
