# Names the firmware interns find the room they would find on an ESP32.
#
# MicroPython keeps the names it interns at run time (qstrs: every name in a
# .mpy it loads) in pools that double in size when full; a pool is one block
# of the heap, never freed. On an ESP32 the double's modules are C, their
# names static, and the firmware's own names fill the pools from the start:
# about 1,270 fit before the pool that holds 1,280 more is needed. Here the
# double's Python modules intern ~230 names first, which moved that growth
# (one block of ~14 KB on the 64-bit unix port) to whichever firmware module
# happened to be loading then: h2p.topics, in a heap the boot had already cut
# into pieces, so its import failed however large the heap was.
#
# fill() interns placeholder names after the double's own until the pool of
# 1,280 has been made, while the heap is still whole: the firmware then starts
# with ~1,280 names of room, as on the chip. What it costs (the placeholders
# and the pools) is the double's, measured by probe_cost.py and added to the
# firmware's heap like the rest of the double.
import gc

from micropython import const

_BIG_POOL = const(10000)  # bytes: the 1,280-entry pool (~14 KB); the 640 one is ~7 KB


def fill():
    n = 0
    while n < 4000:
        if not n % 16:
            # the placeholders' strings are garbage between the pools' name
            # chunks: collected as they go, the chunks pack at the heap's
            # start and leave the rest whole for the pool
            gc.collect()
        a = gc.mem_alloc()
        getattr(fill, "_q%d" % n, None)  # getattr interns its name
        n += 1
        if gc.mem_alloc() - a > _BIG_POOL:
            return n
    raise RuntimeError("esp32 double: no qstr pool growth after 4000 names")
