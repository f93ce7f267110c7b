"""The built-in simulated Hyper-V failover cluster (the default target).

Shaped like the source maintenance campaign: 4 nodes, 18 CSV LUNs with the
campaign's free space (two nearly full), 74 VMs with Gen1/Gen2, configuration
versions 5.0/8.0/9.0, replicas, years-old checkpoint chains and checkpoints
left behind by backup software. It churns live (seeded, so runs repeat) and
answers merges with realistic progress, durations and failures.

Modules: ``lab`` (the campaign's figures), ``config`` (``SimConfig``),
``inventory`` (the initial model), ``clock`` (simulated time), ``world``
(the host's state and its consistency rules), ``churn`` (live changes),
``merge`` (how a merge runs and fails), ``executor`` and ``backend``.
"""

from .backend import SimBackend
from .config import SimConfig
from .executor import SimExecutor
from .inventory import Inventory, build_inventory

__all__ = ["Inventory", "SimBackend", "SimConfig", "SimExecutor", "build_inventory"]
