"""A node's second poll waits for every node's first read (issue 16, stop 12).

At 64 nodes the first nodes' second polls (each answer carrying the
cluster's 8,000 groups) took the CPU from the last nodes' first reads, and
the inventory took 14.8 s and 27.7 s in two runs, not 9 s. ``HyperVBackend._node_loop`` now
starts a node's second interval only when every node's first read is in (or
one interval has passed). This test pins that ordering against the WinRM
endpoint, one endpoint per node: the last node's host is slow to answer its
first read, and no other node may poll a second time before that read is in.

A poll is counted where the host sees it: ``Get-VMReplication`` goes out
with every full poll and nothing else (``backends/hyperv/backend.py``
``_poll``; the change tests count it the same way). The slow host holds its
first answer until another node's second poll reaches its host (what the
code before stop 12 did one interval after that node's first poll began) or
1.25 intervals after the first node's first read was in: the test waits for
the event, and the cap leaves the slow read 0.75 of an interval (1.9 s) to
finish before the new code's earliest second poll, not a tight bound.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.winrm.cmdlets import CommandWriter
from peers.winrm.fixture import PeerHandle, generate_password, start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry
from peers.winrm.hyperv.profile import MODES
from test_hyperv_backend import Feed, config_for

from ventana.backends.hyperv import Credential, HyperVBackend
from ventana.backends.sim import SimConfig
from ventana.state.events import LinkState

#: Short enough to keep the test fast; long enough that a second poll of the new code
#: (one interval after every first read is in, at the earliest) cannot be mistaken for
#: the release below however slow the machine.
INTERVAL = 2.5
#: How long the slow host holds its first answer at most, in intervals after the first
#: node's first read was in.
HOLD = 1.25
NODES = 4


class PollCounter:
    """Counts each host's full polls (its ``Get-VMReplication`` calls); the last host
    holds its first answer until :attr:`release` is set (a host slow to answer)."""

    def __init__(self, handles: list[PeerHandle]) -> None:
        self.lock = threading.Lock()
        self.polls: Counter[int] = Counter()
        self.times: list[tuple[int, float]] = []  # (node index, time.monotonic()) per poll
        self.second_poll = threading.Event()  # some node polled a second time
        self.held = threading.Event()  # the slow host has the first read in hand
        self.release = threading.Event()
        for index, handle in enumerate(handles):
            self._wrap(handle, index, slow=index == len(handles) - 1)

    def _wrap(self, handle: PeerHandle, index: int, *, slow: bool) -> None:
        registry = handle.peer.registry
        real = registry.get("Get-VMReplication")
        assert real is not None

        def counted(params: dict[str, Any], writer: CommandWriter) -> None:
            with self.lock:
                self.polls[index] += 1
                self.times.append((index, time.monotonic()))
                first = self.polls[index] == 1
                if self.polls[index] == 2:
                    self.second_poll.set()
            if slow and first:
                self.held.set()
                # The pipeline's own stop (the client's command timeout) ends the wait too.
                while not self.release.wait(0.05) and not writer.stopping:
                    pass
            real(params, writer)

        registry.register("Get-VMReplication", counted)

    def snapshot(self) -> dict[int, int]:
        with self.lock:
            return dict(self.polls)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[list[PeerHandle], str]]:
    """One endpoint per node of a four-node cluster, and a bundle of their CAs."""
    model = ClusterModel(SimConfig(vms=16, nodes=NODES, rate=0), profile=MODES["server2019"])
    password = generate_password()
    handles: list[PeerHandle] = []
    try:
        for name in sorted(model.nodes):
            handles.append(
                start_winrm_peer(registry=build_hyperv_registry(model, name), password=password)
            )
        bundle = tmp_path / "cas.pem"
        bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles))
        yield handles, str(bundle)
    finally:
        for handle in handles:
            handle.stop()


@pytest.mark.timeout(40)
async def test_no_node_polls_twice_before_the_last_nodes_first_read_is_in(
    nodes: tuple[list[PeerHandle], str],
) -> None:
    handles, bundle = nodes
    counter = PollCounter(handles)
    config = config_for(handles, bundle, poll_interval=INTERVAL, command_timeout=30.0)
    backend = HyperVBackend(config, Credential(handles[0].user, handles[0].password, "t"))
    feed = Feed(backend)
    *fast, slow = backend.sources
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    try:
        await feed.until(
            lambda: any(feed.last_state(s) is LinkState.CONNECTED for s in fast),
            20,
            "a node's first read",
        )
        first_in = loop.time()
        await feed.until(
            lambda: all(feed.last_state(s) is LinkState.CONNECTED for s in fast),
            20,
            "every other node's first read",
        )
        assert await asyncio.to_thread(counter.held.wait, 10), "the slow host never asked"
        assert feed.last_state(slow) is not LinkState.CONNECTED
        # Before stop 12 the first node polled again one interval after its first poll
        # began: the host is held until then. Now no node polls again before one
        # interval after the last first read, or two after its own if that never comes:
        # the hold ends at 1.25 intervals, leaving the slow read 0.75 of one to finish.
        left = first_in + HOLD * INTERVAL - loop.time()
        await asyncio.to_thread(counter.second_poll.wait, max(0.0, left))
        counter.release.set()
        await feed.until(
            lambda: feed.last_state(slow) is LinkState.CONNECTED, 20, "the slow node's first read"
        )
        polls = counter.snapshot()
        assert polls == dict.fromkeys(range(NODES), 1), (
            f"polls per node (by index) before the last node's first read was in: {polls}; "
            f"(node, s) of each: {[(i, round(t - start, 2)) for i, t in counter.times]}, "
            f"the last read in at {time.monotonic() - start:.2f} s"
        )
        # And the second polls do come (at most one interval after it).
        await asyncio.to_thread(counter.second_poll.wait, 2 * INTERVAL)
        assert counter.second_poll.is_set()
    finally:
        counter.release.set()
        await feed.close()
