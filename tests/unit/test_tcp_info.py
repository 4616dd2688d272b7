"""The TCP_INFO decoder on bytes captured from a real kernel, whole and cut short."""

from __future__ import annotations

import inspect
import struct
from pathlib import Path

from echostat.server.tcp_info import (
    _FIELDS,
    LISTEN_QUEUE_BYTES,
    TcpInfo,
    _from_kernel,
    accept_queue,
    decode,
)

CAPTURED = (Path(__file__).parent / "data" / "tcp_info_loopback.bin").read_bytes()
"""A loopback connection after a 4 MiB send (see data/README.md)."""

LINUX_3_STRUCT_BYTES = 104
"""struct tcp_info up to tcpi_total_retrans, as kernels before 4.x returned it."""


def test_captured_structure_decodes_to_the_kernel_values() -> None:
    """Every field of a captured structure comes out in the API's units."""
    assert decode(CAPTURED) == TcpInfo(
        rtt_ms=0.452,
        rttvar_ms=0.474,
        min_rtt_ms=0.017,
        retransmits=0,
        lost=0,
        cwnd=36,
        delivery_rate_bps=909_486_111 * 8,
        unacked=0,
    )


def test_fields_beyond_a_short_structure_are_none() -> None:
    """An older kernel's shorter structure gives None for the newer fields, not garbage."""
    info = decode(CAPTURED[:LINUX_3_STRUCT_BYTES])
    assert info.min_rtt_ms is None
    assert info.delivery_rate_bps is None
    assert (info.rtt_ms, info.cwnd, info.retransmits) == (0.452, 36, 0)


def test_a_field_cut_in_half_is_none() -> None:
    """A structure ending inside a field gives None for it (and the fields after it)."""
    info = decode(CAPTURED[:70])
    assert info.rtt_ms is None
    assert info.cwnd is None
    assert info.lost == 0


def test_empty_structure_gives_all_none() -> None:
    assert decode(b"") == TcpInfo(None, None, None, None, None, None, None, None)


def test_counters_are_read_at_their_offsets() -> None:
    """Retransmits, lost and unacked come from tcpi_total_retrans, tcpi_lost, tcpi_unacked."""
    patched = bytearray(CAPTURED)
    struct.pack_into("=I", patched, 100, 7)
    struct.pack_into("=I", patched, 32, 3)
    struct.pack_into("=I", patched, 24, 5)
    info = decode(bytes(patched))
    assert (info.retransmits, info.lost, info.unacked) == (7, 3, 5)


def test_min_rtt_without_a_sample_is_none() -> None:
    """The kernel's ~0U for "no min_rtt sample yet" is not a 4,294,967 ms round trip."""
    patched = bytearray(CAPTURED)
    struct.pack_into("=I", patched, 148, 0xFFFFFFFF)
    assert decode(bytes(patched)).min_rtt_ms is None


def test_offset_table_and_decoder_name_the_same_fields_in_order() -> None:
    """The table of offsets feeds the decoder positionally: both list the same fields."""
    assert [name for name, _, _ in _FIELDS] == list(inspect.signature(_from_kernel).parameters)


def test_a_listening_sockets_accept_queue_is_its_unacked_field() -> None:
    """A listener's TCP_INFO gives its accept queue in tcpi_unacked; too short gives None."""
    listening = bytearray(LISTEN_QUEUE_BYTES)
    struct.pack_into("=I", listening, 24, 9)
    assert accept_queue(bytes(listening)) == 9
    assert accept_queue(bytes(listening[:-1])) is None
