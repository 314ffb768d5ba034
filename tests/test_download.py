"""qtl.utils.download.reachable: a quick, bounded check that a server answers."""

from __future__ import annotations

import socket

from qtl.utils.download import reachable


class TestReachable:
    def test_closed_port_is_unreachable_quickly(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        assert reachable(f"http://127.0.0.1:{port}/", timeout=1.0) is False

    def test_listening_port_is_reachable(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            assert reachable(f"http://127.0.0.1:{s.getsockname()[1]}/", timeout=1.0) is True
