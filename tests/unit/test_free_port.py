"""free_port never hands out the same port twice within its reservation time, even to
another process choosing ports at the same moment (two test workers, say)."""

from __future__ import annotations

import socket

from services.common import infrastructure


def test_a_port_given_once_is_not_given_again_while_reserved() -> None:
    ports = [infrastructure.free_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    # Another caller asking for one of them is refused.
    assert not infrastructure._reserve(ports[0])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", ports[-1]))  # and each was free to bind
