"""The emulated Pico W's network: everything it sends stays on this machine.

rp2040py's CYW43 model answers ARP/DHCP for a fake access point (10.0.0.1
gateway, the board gets 10.0.0.2) and splices guest TCP onto host sockets;
its own UDP relay would send DNS to a public resolver and any other datagram
to wherever the guest addressed it. `LoopbackNat` replaces that bridge:

- TCP to 10.0.0.1:PORT, for a PORT the harness registered → 127.0.0.1:(mapped port),
  through rp2040py's `TcpReflector` with our `connect_fn`; every other destination
  is refused (the guest gets a RST) and logged;
- UDP to 10.0.0.1:123 → the harness's SNTP responder on 127.0.0.1; every other
  datagram (DNS to the gateway or elsewhere included) is dropped and logged;
- `ApBus` (the CYW43 bus) takes the access point away and back: a
  deauthentication to the station, its host-side TCP flows closed, and joins
  answered "no network" until it is back;
- `FreshSynReflector` lets a board that reset reconnect on the port it used before.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rp2040py.external.cyw43 import net as cnet
from rp2040py.external.cyw43.bus import (
    CONTROL_HEADER,
    CYW43_EV_SET_SSID,
    IOCTL_HEADER_LEN,
    SDPCM_HEADER_LEN,
    WLC_SET_SSID,
    GSPIBus,
)
from rp2040py.external.cyw43.chip import Cyw43439
from rp2040py.external.cyw43.nat import GATEWAY_IP, ArpResponder, DhcpServer, TcpFlowKey, TcpReflector

if TYPE_CHECKING:
    from rp2040py.rp2040 import RP2040

GATEWAY = ".".join(str(b) for b in GATEWAY_IP)
LOOPBACK = "127.0.0.1"
NTP_PORT = 123
_JOIN_EVENTS = 5  # GSPIBus._queue_join_events queues five events
CYW43_STATUS_NO_NETWORKS = 3  # cyw43_ll.h: the join found no such network (out of range, AP off)


@dataclass
class NetRules:
    """What the board may reach: gateway port → 127.0.0.1 port, and an SNTP port."""

    tcp: dict[int, int] = field(default_factory=dict)
    sntp_port: int | None = None
    # Every decision, in order: (proto, "ip:port", "allowed"/"refused"/"dropped").
    log: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The same decisions with the board's time (seconds) when a clock is given.
    clock: Callable[[], float] | None = None
    timed: list[tuple[float, str, str, str]] = field(default_factory=list)

    def allow_tcp(self, port: int, local_port: int | None = None) -> None:
        self.tcp[port] = local_port if local_port is not None else port

    def note(self, proto: str, dst: str, verdict: str) -> None:
        with self.lock:
            self.log.append((proto, dst, verdict))
            if self.clock is not None:
                self.timed.append((round(self.clock(), 3), proto, dst, verdict))

    def refused(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return [x for x in self.log if x[2] != "allowed"]


class FreshSynReflector(TcpReflector):
    """rp2040py's TcpReflector, except that a SYN on a known (port, destination)
    whose flow is already established, or which carries another sequence number,
    replaces the old flow (only a retransmitted SYN of a flow still opening is
    the same connection).

    A board that resets (watchdog, crash) forgets its connections; lwIP then
    reuses the same ephemeral ports in the same order, and rp2040py's reflector
    would feed the new SYN into the dead flow (no SYN-ACK: the connect times
    out, port after port). lwIP's first ISN after a reset is as deterministic
    as its ports, so the sequence number alone does not tell them apart. A real peer answers such a SYN within a round trip
    (RFC 793 half-open recovery); dropping the stale flow is that, here. The
    host side of the old flow is closed (the broker sees the connection end)."""

    def maybe_handle(self, eth: cnet.EthernetFrame, ip: cnet.Ipv4Packet) -> bool:
        if ip.proto == cnet.IP_PROTO_TCP:
            tcp = cnet.parse_tcp(ip.payload)
            if tcp is not None and tcp.flags & cnet.TCP_SYN and not tcp.flags & cnet.TCP_ACK:
                key = TcpFlowKey(tcp.src_port, ip.dst_ip, tcp.dst_port)
                old = self._flows.get(key)
                if old is not None and (old.guest_iss != tcp.seq or old.state.name == "ESTABLISHED"):
                    if old.pump_task is not None:
                        old.pump_task.cancel()
                    if old.writer is not None:
                        old.writer.close()
                    del self._flows[key]
        return super().maybe_handle(eth, ip)


class LoopbackNat:
    """Stands in for rp2040py's `NatBridge` on the CYW43 bus (same two methods)."""

    def __init__(self, rp2040: RP2040, queue_ethernet_frame: Callable[[bytes], None], rules: NetRules) -> None:
        self.rules = rules
        self._rp2040 = rp2040
        self._queue = queue_ethernet_frame
        self._arp = ArpResponder()
        self._dhcp = DhcpServer()
        self._tcp = FreshSynReflector(rp2040, queue_ethernet_frame, connect_fn=self._connect, connect_timeout=5.0)

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        local = self.rules.tcp.get(port) if host == GATEWAY else None
        if local is None:
            self.rules.note("tcp", f"{host}:{port}", "refused")
            raise ConnectionRefusedError(f"{host}:{port} is not reachable from the emulated board")
        self.rules.note("tcp", f"{host}:{port}", "allowed")
        return await asyncio.open_connection(LOOPBACK, local)

    def reset(self) -> None:
        self._tcp.reset()

    def handle_outbound_ethernet_frame(self, frame: bytes) -> None:
        eth = cnet.parse_ethernet(frame)
        if eth is None:
            return
        if eth.ethertype == cnet.ETHERTYPE_ARP:
            reply = self._arp.maybe_handle(eth)
            if reply is not None:
                self._queue(reply)
            return
        if eth.ethertype != cnet.ETHERTYPE_IPV4:
            return
        ip = cnet.parse_ipv4(eth.payload)
        if ip is None:
            return
        if ip.proto == cnet.IP_PROTO_UDP:
            reply = self._dhcp.maybe_handle(eth)
            if reply is not None:
                self._queue(reply)
                return
            self._udp(eth, ip)
        elif ip.proto == cnet.IP_PROTO_TCP:
            self._tcp.maybe_handle(eth, ip)

    def _udp(self, eth: cnet.EthernetFrame, ip: cnet.Ipv4Packet) -> None:
        udp = cnet.parse_udp(ip.payload)
        if udp is None:
            return
        dst = ".".join(str(b) for b in ip.dst_ip)
        if ip.dst_ip == GATEWAY_IP and udp.dst_port == NTP_PORT and self.rules.sntp_port:
            self.rules.note("udp", f"{dst}:{udp.dst_port}", "allowed")
            self._rp2040.schedule_threadsafe(self._sntp(eth, ip, udp))
        else:
            self.rules.note("udp", f"{dst}:{udp.dst_port}", "dropped")

    async def _sntp(self, eth: cnet.EthernetFrame, ip: cnet.Ipv4Packet, udp: cnet.UdpDatagram) -> None:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class _One(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                if not got.done():
                    got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(_One, remote_addr=(LOOPBACK, self.rules.sntp_port))
        try:
            transport.sendto(udp.payload)
            reply = await asyncio.wait_for(got, 2.0)
        except (TimeoutError, OSError):
            return
        finally:
            transport.close()
        u = cnet.pack_udp(ip.dst_ip, ip.src_ip, udp.dst_port, udp.src_port, reply)
        p = cnet.pack_ipv4(ip.dst_ip, ip.src_ip, cnet.IP_PROTO_UDP, u)
        self._queue(cnet.pack_ethernet(eth.src_mac, eth.dst_mac, cnet.ETHERTYPE_IPV4, p))


class ApBus(GSPIBus):
    """The CYW43 bus with an access point that can go away: while `ap_up` is
    False a join (WLC_SET_SSID) is acknowledged and answered "no network", and
    the station's data frames go nowhere."""

    ap_up = True

    def _write_wlan(self, data: bytes) -> None:
        if self.ap_up:
            super()._write_wlan(data)
            return
        if len(data) >= SDPCM_HEADER_LEN + IOCTL_HEADER_LEN and data[5] & 0x0F == CONTROL_HEADER:
            cmd = int.from_bytes(data[SDPCM_HEADER_LEN:SDPCM_HEADER_LEN + 4], "little")
            if cmd == WLC_SET_SSID:
                super()._write_wlan(data)
                # The ack went out as usual; the five scripted join events queued
                # behind it (SET_SSID, AUTH, ASSOC, PSK_SUP, LINK) are replaced by
                # "no network", what a station out of range hears.
                del self._rx_queue[-_JOIN_EVENTS:]
                self.queue_rx_packet(self._build_async_event(CYW43_EV_SET_SSID, CYW43_STATUS_NO_NETWORKS))
                return
        if len(data) >= 6 and data[5] & 0x0F != CONTROL_HEADER:
            # A data frame while out of range: answered for credit, never delivered.
            nat, self.nat_bridge = self.nat_bridge, None
            try:
                super()._write_wlan(data)
            finally:
                self.nat_bridge = nat
            return
        super()._write_wlan(data)

    def drop(self) -> None:
        """The AP disappears: deauth the station, close its host-side flows."""
        self.ap_up = False
        if self.nat_bridge is not None:
            self.nat_bridge.reset()
        self._queue_disassoc_events()

    def restore(self) -> None:
        self.ap_up = True


class GuardedCyw43(Cyw43439):
    """rp2040py's CYW43439 with `ApBus` and `LoopbackNat` instead of its NAT bridge."""

    def __init__(self, rules: NetRules) -> None:
        super().__init__()
        self.bus = ApBus()
        self.rules = rules

    def attach(self, rp2040: RP2040) -> None:
        super().attach(rp2040)
        # Replaced before the firmware runs a single instruction: rp2040py's
        # NatBridge (and its public-resolver UDP relay) never sees a frame.
        self.bus.nat_bridge = LoopbackNat(rp2040, self.bus.queue_rx_ethernet_frame, self.rules)


# ---- SNTP responder on 127.0.0.1 --------------------------------------------------------------
NTP_DELTA = 2208988800  # 1900-01-01 to 1970-01-01


class SntpResponder:
    """Answers SNTP client requests (mode 3) with the host's time (mode 4, stratum 2)."""

    def __init__(self) -> None:
        # What the board's clock reads is the board's to say (EmuPicoW.unix_time,
        # from its `LOG clock set`): an answer sent is not an answer applied.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.answered = 0
        self._stop = False
        self._t = threading.Thread(target=self._serve, name="sntp", daemon=True)
        self._t.start()

    @staticmethod
    def _ts(t: float) -> bytes:
        return struct.pack("!II", int(t) + NTP_DELTA, int((t % 1) * 2**32))

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 48 or data[0] & 7 != 3:
                continue
            now = time.time()
            reply = (bytes([(data[0] & 0x38) | 4, 2, data[2], 0xEC]) + bytes(8) + b"LOCL"
                     + self._ts(now) + data[40:48] + self._ts(now) + self._ts(time.time()))
            self.sock.sendto(reply, addr)
            self.answered += 1

    def close(self) -> None:
        self._stop = True
        self.sock.close()
