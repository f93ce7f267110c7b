"""ESXi 8's ``CPT: vm was stunned for N us`` line (Broadcom KB 417644)."""

from __future__ import annotations

from ventana.backends.ssh.stun import parse_stun_lines


def test_cpt_lines_count_alone_but_not_twice_beside_checkpoint_unstun() -> None:
    log = "\n".join([
        # ESXi 8: both lines for one stun.
        "2025-03-01T10:00:00.100Z In(05) vcpu-0 - Checkpoint_Unstun: vm stopped for 812345 us",
        "2025-03-01T10:00:00.101Z In(05) vcpu-0 - CPT: vm was stunned for 812400 us",
        # A CPT line alone (the other line rotated away or filtered).
        "2025-03-01T11:00:00.000Z In(05) vcpu-0 - CPT: vm was stunned for 2500000 us",
        "2025-03-01T11:00:05.000Z In(05) vmx - something else entirely",
    ])
    events = parse_stun_lines(log)
    assert [e.duration_us for e in events] == [812345, 2500000]
