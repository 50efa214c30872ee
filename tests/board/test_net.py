"""The network rule: nothing the emulated board sends leaves this machine.

The board (MicroPython's REPL, no firmware) joins the emulated access point
and tries every kind of destination. What may pass: TCP to 10.0.0.1 on a
port the harness registered (→ 127.0.0.1), SNTP to 10.0.0.1:123 (→ the
harness's responder). Everything else is refused (TCP: the guest sees a
reset) or dropped (UDP, DNS included), and logged. A CPython audit hook
watches every socket this process connects or sends on while the board
works: all of them go to 127.0.0.1.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

_seen: list[tuple[str, object]] = []
_watch = threading.Event()


def _audit(event: str, args: tuple) -> None:
    if _watch.is_set() and event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        _seen.append((event, args[1] if len(args) > 1 else None))


sys.addaudithook(_audit)  # process-wide and permanent: records only while _watch is set


def _off_host(seen: list[tuple[str, object]]) -> list[tuple[str, object]]:
    bad = []
    for ev, addr in seen:
        host = addr[0] if isinstance(addr, tuple) and addr else addr
        if host not in ("127.0.0.1", "localhost"):
            bad.append((ev, addr))
    return bad


@pytest.fixture(scope="module")
def joined(repl_rig):
    rig, repl = repl_rig
    out = repl.exec(
        "import network, socket, time\n"
        "w = network.WLAN(network.STA_IF)\nw.active(True)\nw.connect('h2pile-test', 'secret')\n"
        "t = time.ticks_ms()\n"
        "while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t) < 10000:\n    time.sleep_ms(50)\n"
        "print(w.isconnected(), w.ifconfig()[0], w.ifconfig()[2])", timeout=180)
    assert out.split() == ["True", "10.0.0.2", "10.0.0.1"]
    return rig, repl


@pytest.fixture
def echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    got: list[bytes] = []

    def serve() -> None:
        try:
            while True:
                c, _ = srv.accept()
                d = c.recv(64)
                got.append(d)
                c.sendall(d.upper())
                c.close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1], got
    srv.close()


def test_registered_gateway_port_reaches_loopback(joined, echo_server):
    rig, repl = joined
    port, got = echo_server
    rig.rules.allow_tcp(port)
    _seen.clear()
    _watch.set()
    try:
        out = repl.exec("s = socket.socket()\ns.connect(('10.0.0.1', %d))\ns.send(b'pile')\n"
                        "print(s.recv(16))\ns.close()" % port)
    finally:
        _watch.clear()
    assert out.strip() == "b'PILE'"
    assert got == [b"pile"]
    assert ("tcp", f"10.0.0.1:{port}", "allowed") in rig.rules.log
    assert _seen and not _off_host(_seen)


def test_every_other_destination_is_refused_and_nothing_leaves(joined, echo_server):
    rig, repl = joined
    port, got = echo_server  # listening, but not registered: must stay unreachable
    n0 = len(rig.rules.log)
    _seen.clear()
    _watch.set()
    # The UDP answer is waited for 0.5 s of board time: with WiFi up the board
    # runs ~40x slower than the wall clock (tens of wall seconds), far longer
    # than a reply relayed by the host would take; each board second is ~20 s
    # of one core.
    try:
        out = repl.exec(
            "def tcp(host, port):\n"
            "    s = socket.socket()\n"
            "    try:\n        s.connect((host, port))\n        s.send(b'x')\n        r = s.recv(4)\n"
            "        return 'open' if r else 'closed'\n"
            "    except OSError as e:\n        return 'refused %%d' %% e.errno\n"
            "    finally:\n        s.close()\n"
            "for d in (('192.0.2.1', 80), ('1.1.1.1', 53), ('10.0.0.1', %d)):\n    print(d[0], tcp(*d))\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for d in (('10.0.0.1', 53), ('8.8.8.8', 53), ('192.0.2.1', 123), ('10.0.0.1', 9999)):\n"
            "    u.sendto(b'\\x12\\x34' + bytes(30), d)\n"
            "u.settimeout(0.5)\n"
            "try:\n    u.recv(64)\n    print('udp answered')\nexcept OSError:\n    print('udp silent')\n"
            "u.close()\n" % port, timeout=300)
        # Let the host side settle (the NAT works asynchronously) before the audit.
        time.sleep(1)
    finally:
        _watch.clear()
    lines = out.split("\r\n")
    for host in ("192.0.2.1", "1.1.1.1", "10.0.0.1"):
        line = next(x for x in lines if x.startswith(host + " "))
        assert line.split()[1] == "refused", line
    assert "udp silent" in out
    log = rig.rules.log[n0:]
    assert ("tcp", "192.0.2.1:80", "refused") in log
    assert ("tcp", "1.1.1.1:53", "refused") in log
    assert ("tcp", f"10.0.0.1:{port}", "refused") in log
    for d in ("10.0.0.1:53", "8.8.8.8:53", "192.0.2.1:123", "10.0.0.1:9999"):
        assert ("udp", d, "dropped") in log
    assert all(v != "allowed" for _, _, v in log)
    assert got == []
    assert not _off_host(_seen), _seen
    # rp2040py's own bridge (with its public-resolver UDP relay) is not on the bus at all.
    from host_tools.emu.net import LoopbackNat

    assert isinstance(rig.board.wifi.bus.nat_bridge, LoopbackNat)


def test_sntp_answers_with_host_time(joined):
    rig, repl = joined
    out = repl.exec(
        "import struct\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.settimeout(5)\n"
        "q = bytearray(48)\nq[0] = 0x1b\nu.sendto(q, ('10.0.0.1', 123))\nr = u.recv(48)\nu.close()\n"
        "print(r[0] & 7, struct.unpack('!I', r[40:44])[0] - 2208988800)")
    mode, t = out.split()
    assert mode == "4"
    assert abs(int(t) - time.time()) < 30
    assert rig.sntp is not None and rig.sntp.answered >= 1


def test_fresh_syn_replaces_a_dead_flow():
    # No emulator: the reflector alone. A board that reset reuses its ephemeral
    # port; the new SYN (new sequence number) must open a new flow and close the
    # old one's host side, while a retransmitted SYN (same number) changes nothing.
    from rp2040py.external.cyw43 import net as cnet

    from host_tools.emu.net import FreshSynReflector

    started: list[object] = []

    class Chip:
        def schedule_threadsafe(self, coro: object) -> None:
            started.append(coro)
            coro.close()  # type: ignore[attr-defined]

    class Writer:
        closed = False

        def close(self) -> None:
            self.closed = True

    r = FreshSynReflector(Chip(), lambda frame: None)  # type: ignore[arg-type]
    guest, gw = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])

    def syn(seq: int) -> None:
        seg = cnet.pack_tcp(guest, gw, 50000, 1883, seq=seq, ack=0, flags=cnet.TCP_SYN, window=5000)
        frame = cnet.pack_ethernet(bytes(6), bytes([2, 0, 0, 0, 0, 2]), cnet.ETHERTYPE_IPV4,
                                   cnet.pack_ipv4(guest, gw, cnet.IP_PROTO_TCP, seg))
        eth = cnet.parse_ethernet(frame)
        r.maybe_handle(eth, cnet.parse_ipv4(eth.payload))

    syn(100)
    assert len(started) == 1 and len(r._flows) == 1
    old = next(iter(r._flows.values()))
    old.writer = Writer()
    syn(100)  # a retransmission of the same SYN
    assert len(started) == 1 and next(iter(r._flows.values())) is old
    syn(7777)  # the board reset and came back on the same port
    assert len(started) == 2 and old.writer.closed
    second = next(iter(r._flows.values()))
    assert second.guest_iss == 7777
    # Established, then the same port *and* the same ISN again (lwIP after a
    # reset is that deterministic): still a new connection.
    second.state = type(second.state)["ESTABLISHED"]
    second.writer = Writer()
    syn(7777)
    assert len(started) == 3 and second.writer.closed
