"""The nodes pane: each cluster node's state, VMs, CSVs and backup agent."""

from __future__ import annotations

from rich.text import Text

from ventana.state.model import Node, NodeState, ServiceState
from ventana.state.store import Store

from .keyed_table import KeyedTable

_STATE_STYLE = {
    NodeState.UP: "green",
    NodeState.DRAINING: "yellow",
    NodeState.PAUSED: "yellow",
    NodeState.JOINING: "yellow",
    NodeState.DOWN: "bold red",
    NodeState.UNKNOWN: "dim",
}


def node_cells(node: Node, store: Store) -> list[Text]:
    csvs = [store.lun(i) for i in node.csv_owned]
    csv_names = ", ".join(lun.name for lun in csvs if lun is not None)
    agent = node.backup_agent_state
    agent_style = "green" if agent is ServiceState.RUNNING else "bold red"
    return [
        Text(node.name, style="bold"),
        Text(node.state.value, style=_STATE_STYLE.get(node.state, "")),
        Text(str(node.vm_count), justify="right"),
        Text(f"{len(node.csv_owned)}", justify="right"),
        Text(f"{node.backup_agent_version or '?'} {agent.value}", style=agent_style),
        Text(csv_names, style="dim"),
    ]


class NodesPane(KeyedTable):
    COLUMNS = (
        ("name", "Node", 14),
        ("state", "State", 9),
        ("vms", "VMs", 4),
        ("csvs", "CSVs", 4),
        ("agent", "Backup agent", 20),
        ("owned", "Owns", 46),
    )

    def __init__(self, **kwargs: object) -> None:
        super().__init__(self.COLUMNS, **kwargs)

    def sync(self, store: Store, ids: set[str] | None = None) -> None:
        """Bring rows for ``ids`` (or all nodes) in line with the store."""
        wanted = ids if ids is not None else {n.id for n in store.nodes()} | set(self.keys)
        def order(i: str) -> tuple[str, str]:
            node = store.node(i)
            return (node.name if node else i, i)

        for node_id in sorted(wanted, key=order):
            node = store.node(node_id)
            if node is None:
                self.discard(node_id)
            else:
                self.upsert(node_id, node_cells(node, store))
