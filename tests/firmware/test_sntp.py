"""h2p.sntp on the MicroPython unix port against an SNTP responder on
127.0.0.1: the clock comes back as the responder's time; a silent server and
a bad reply are errors that say what went wrong (the pile retries)."""

import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from tests.helpers.fwbuild import MICROPYTHON, ROOT

pytestmark = [pytest.mark.micropython]


OFFSET = 12345.0  # the responder's clock runs this far ahead of the host's


class Responder:
    def __init__(self, stratum=2):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(("127.0.0.1", 0))
        self.port = self.s.getsockname()[1]
        self.stratum = stratum
        self.asked = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                req, addr = self.s.recvfrom(512)
            except OSError:
                return
            self.asked += 1
            t = time.time() + OFFSET + 2208988800
            b = bytearray(48)
            b[0] = 0x24  # version 4, server
            b[1] = self.stratum
            struct.pack_into("!II", b, 40, int(t), int((t % 1) * 2**32))
            self.s.sendto(bytes(b), addr)

    def close(self):
        self.s.close()


def _query(fw_lib, port):
    code = ("import asyncio\nfrom h2p import sntp\n"
            "try:\n    print('T', asyncio.run(sntp.query('127.0.0.1', %d, 500)))\n"
            "except (OSError, ValueError) as e:\n    print('E', e)\n" % port)
    env = dict(os.environ, MICROPYPATH=".frozen:" + fw_lib)
    r = subprocess.run([MICROPYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_query_sets_the_time_from_the_server(fw_lib):
    srv = Responder()
    try:
        out = _query(fw_lib, srv.port)
    finally:
        srv.close()
    assert out.startswith("T "), out
    assert abs(float(out[2:]) - (time.time() + OFFSET)) < 5, out
    assert srv.asked == 1


def test_silent_server_and_unsynchronised_server_are_errors(fw_lib):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # bound, never answers
    try:
        out = _query(fw_lib, s.getsockname()[1])
    finally:
        s.close()
    assert out.startswith("E sntp: no answer from 127.0.0.1"), out
    srv = Responder(stratum=0)
    try:
        out = _query(fw_lib, srv.port)
    finally:
        srv.close()
    assert out == "E sntp: server not synchronised (stratum 0)", out
