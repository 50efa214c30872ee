# The board side of `h2pile flash | provision | verify`: MicroPython code the
# host sends into the board's raw REPL once per session (globals persist
# there), then calls by name, one short exec each: host_tools/flash/session.py
# loads it (comments and docstrings stripped, in chunks of about 1 KB: the
# stopped firmware still holds much of the heap, and the raw REPL compiles
# each exec from a buffer in that heap).
#
# Not imported on the host. Runs on every MicroPython port the firmware runs
# on (1.23+), so it uses only what all of them have: os, sys, hashlib,
# binascii (and vfs, where there is one, for the ROMFS part). The type hints
# are for the reader; they are stripped before sending.
#
# Every global name here starts with `agent_`, and none may be a name the
# firmware uses (tests/test_flash_romfs.py checks): a .mpy run from /rom
# interns its names pointing into the ROMFS partition, so once `flash`
# rewrites the partition such a name no longer matches itself, and a helper
# sharing it could not be called any more in that session.

import binascii
import hashlib
import os
import sys

# The watchdog the stopped firmware started (machine.WDT on a board, a thread
# on the unix board), fed directly: the firmware's own feed_hw() would run its
# bytecode, which on a ROMFS board is in the partition a flash erases.
agent_wdt = getattr(sys.modules.get('h2p.board_mcu') or sys.modules.get('h2p.board_unix'), '_hw_wdt', None)


def agent_feed() -> None:
    # Called before every step that can take a while (hashing, copying,
    # erasing), so a long flash never lets the watchdog reset the board.
    if agent_wdt:
        agent_wdt.feed()


def agent_exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def agent_isdir(path: str) -> bool:
    try:
        return os.stat(path)[0] & 0x4000 != 0
    except OSError:
        return False


def agent_sha256(path: str) -> str | None:
    # Hex sha256 of a file, None when it does not exist. Read into one
    # 512-byte buffer: no allocation per block.
    agent_feed()
    try:
        f = open(path, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    buf = bytearray(512)
    view = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if not n:
            break
        h.update(view[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()


def agent_remove(path: str) -> None:
    # Remove a file or a whole directory tree; nothing there is fine.
    agent_feed()
    if agent_isdir(path):
        for name in os.listdir(path):
            agent_remove(path + '/' + name)
        os.rmdir(path)
    elif agent_exists(path):
        os.remove(path)


def agent_makedirs(path: str) -> None:
    done = ''
    for part in path.split('/'):
        done = done + '/' + part if done else part
        if not agent_exists(done):
            os.mkdir(done)


def agent_copy(src: str, dst: str) -> None:
    # A file the board already has (unchanged in the new firmware) is copied
    # on the board rather than sent again over the serial line.
    agent_feed()
    buf = bytearray(512)
    with open(src, 'rb') as fa, open(dst, 'wb') as fb:
        while True:
            n = fa.readinto(buf)
            if not n:
                break
            fb.write(memoryview(buf)[:n])


def agent_free() -> tuple:
    # (block size, blocks, free blocks) of the filesystem.
    s = os.statvfs('.')
    return (s[0], s[2], s[3])


# Files go over in pieces of base64. One exec carries several pieces, of one
# file or of several small ones (session.write_files): a round trip through
# the raw REPL costs more than the bytes on a board's USB. z: the piece is
# raw deflate with a window of 2**z bytes (0: as it is).
def agent_put(path: str, b64: str, first: int, last: int, z: int) -> None:
    global agent_file
    agent_feed()
    if first:
        agent_file = open(path, 'wb')
    data = binascii.a2b_base64(b64)
    if z:
        import io

        import deflate
        data = deflate.DeflateIO(io.BytesIO(data), deflate.RAW, z).read()
    agent_file.write(data)
    if last:
        agent_file.close()


def agent_inflates() -> bool:
    # MicroPython 1.21+ has deflate where the port enables it (rp2, esp32, unix do).
    try:
        import deflate  # noqa: F401
        return True
    except ImportError:
        return False


def agent_abort() -> None:
    # After a failed exec: the file it was writing is closed (the host
    # removes the staging directory, or says which file failed).
    try:
        agent_file.close()
    except Exception:
        pass


def agent_walk(path: str, out: list) -> list:
    # Every file under path (directories descended), appended to out.
    for name in os.listdir(path):
        sub = path + '/' + name if path else name
        if agent_isdir(sub):
            agent_walk(sub, out)
        else:
            out.append(sub)
    return out


def agent_keep(entry: str, keep: str) -> None:
    # Move a live firmware entry into keep/ (the previous firmware, for
    # --rollback); if keep/ already has it, an earlier run moved it there.
    dst = keep + '/' + entry
    agent_makedirs(dst.rsplit('/', 1)[0])
    if agent_exists(dst):
        agent_remove(entry)
    else:
        os.rename(entry, dst)


def agent_finish_switch(src: str, keep: str, entries: tuple, have: list) -> None:
    # The switch-over: each firmware entry in src/ takes the place of the
    # live one, which goes to keep/. `have`: the entries src held when the
    # switch began (the .switch mark says so), so a rerun after an
    # interruption knows what is still to do. Renames only: each step is
    # atomic on littlefs, and every step can be run again.
    for entry in entries:
        if entry in have:
            if agent_exists(src + '/' + entry):
                if agent_exists(entry):
                    agent_keep(entry, keep)
                if '/' in entry:
                    agent_makedirs(entry.rsplit('/', 1)[0])
                os.rename(src + '/' + entry, entry)
        elif agent_exists(entry):
            # Not part of the new firmware (lib/h2p when its code is the ROM
            # image): it goes with the old one, or it would shadow /rom.
            agent_keep(entry, keep)
    agent_remove(src)
    os.remove('.switch')


# ==== ROMFS: sent only when `flash` looks for the partition ====
#
# ROMFS partition 0 (MicroPython 1.25+). Two kinds of port:
# vfs.rom_ioctl(2, 0) gives a block device (ESP32 esp32.Partition, RP2040
# rp2.Flash: erase with ioctl(6, block), program with 4-argument
# writeblocks) or a memoryview of the flash (stm32, samd, mimxrt: erase with
# rom_ioctl(3), program with rom_ioctl(4), then rom_ioctl(5)).
try:
    import vfs
except ImportError:
    vfs = None


def agent_rom_query() -> tuple | None:
    # (size, erase block, kind) of partition 0, or None: no ROMFS here.
    global agent_rom_dev, agent_rom_is_block, agent_rom_block
    if vfs is None or not hasattr(vfs, 'rom_ioctl') or vfs.rom_ioctl(1) <= 0:
        return None
    agent_rom_dev = vfs.rom_ioctl(2, 0)
    if isinstance(agent_rom_dev, int):
        return None
    agent_rom_is_block = hasattr(agent_rom_dev, 'ioctl')
    if agent_rom_is_block:
        agent_rom_block = agent_rom_dev.ioctl(5, 0)
        return (agent_rom_dev.ioctl(4, 0) * agent_rom_block, agent_rom_block, 'block device')
    agent_rom_block = vfs.rom_ioctl(6, 0)
    return (len(agent_rom_dev), agent_rom_block, 'memory')


def agent_rom_read(offset: int, buf: bytearray | memoryview) -> None:
    # Read len(buf) bytes at offset into buf.
    if agent_rom_is_block:
        agent_rom_dev.readblocks(offset // agent_rom_block, buf, offset % agent_rom_block)
    else:
        buf[:] = agent_rom_dev[offset:offset + len(buf)]


def agent_rom_length() -> int:
    # Length of the image in the partition, from its header (magic, then the
    # payload length as a big-endian base-128 number); 0: no image.
    head = bytearray(8)
    agent_rom_read(0, head)
    if head[:3] != b'\xd2\xcd\x31':
        return 0
    n = 0
    i = 3
    while i < 8:
        n = (n << 7) | (head[i] & 0x7f)
        if not head[i] & 0x80:
            return i + 1 + n
        i += 1
    return 0


def agent_rom_sha256(length: int) -> str:
    # Hex sha256 of the first `length` bytes of the partition.
    h = hashlib.sha256()
    buf = bytearray(1024)
    offset = 0
    while offset < length:
        agent_feed()
        view = memoryview(buf)[:min(1024, length - offset)]
        agent_rom_read(offset, view)
        h.update(view)
        offset += len(view)
    return binascii.hexlify(h.digest()).decode()


def agent_rom_image_sha256() -> str | None:
    # sha256 of the image the partition holds, None when it holds none.
    length = agent_rom_length()
    return agent_rom_sha256(length) if length else None


def agent_rom_check(result: object, what: str) -> object:
    # rom_ioctl reports errors as negative errno values.
    if isinstance(result, int) and result < 0:
        raise OSError(-result, what)
    return result


def agent_rom_prepare(length: int) -> None:
    # Prepare `length` bytes for writing: unmount /rom and forget the modules
    # run from it (their bytecode is about to go), then erase, feeding the
    # watchdog per block; agent_rom_write_size: the write size a chunk is
    # padded to.
    global agent_rom_write_size, agent_wdt
    if hasattr(agent_wdt, 'stop'):
        # The unix board's watchdog is firmware code on a thread of its own:
        # stopped before its code is erased (a machine.WDT has no stop).
        agent_wdt.stop()
        agent_wdt = None
        import time
        time.sleep_ms(300)
    try:
        vfs.umount('/rom')
    except OSError:
        pass
    for name in [m for m in sys.modules if m == 'h2p' or m.startswith('h2p.')]:
        del sys.modules[name]
    if agent_rom_is_block:
        for i in range((length + agent_rom_block - 1) // agent_rom_block):
            agent_feed()
            agent_rom_dev.ioctl(6, i)
        agent_rom_write_size = 256
    elif 0 < agent_rom_block < len(agent_rom_dev):
        for offset in range(0, length, agent_rom_block):
            agent_feed()
            agent_rom_write_size = agent_rom_check(vfs.rom_ioctl(3, 0, offset, agent_rom_block), 'erase')
    else:
        agent_feed()
        agent_rom_write_size = agent_rom_check(vfs.rom_ioctl(3, 0, length), 'erase')


def agent_rom_write(offset: int, b64: str) -> None:
    # One chunk of the image at offset, padded to the write size.
    agent_feed()
    data = binascii.a2b_base64(b64)
    if len(data) % agent_rom_write_size:
        data += bytes(agent_rom_write_size - len(data) % agent_rom_write_size)
    if agent_rom_is_block:
        agent_rom_dev.writeblocks(offset // agent_rom_block, data, offset % agent_rom_block)
    else:
        agent_rom_check(vfs.rom_ioctl(4, 0, offset, data), 'write')


def agent_rom_finish() -> None:
    if not agent_rom_is_block:
        agent_rom_check(vfs.rom_ioctl(5, 0), 'finish')
