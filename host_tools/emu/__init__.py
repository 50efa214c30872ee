"""An emulated Raspberry Pi Pico W (rp2040py) running h2pile's firmware, for tests and developers.

uf2       which MicroPython image, checked (one line and a skip when there is none)
uart_fix  our fix for rp2040py 0.3.6's UART transmit interrupt
usb_fix   our fix for its USB CDC host (an empty OUT packet per armed buffer: the core never slept)
pace      the board's clock runs at most at real time
net       what the board's WiFi reaches: only services on 127.0.0.1 (broker, SNTP)
rs485     UART0 ↔ the simulator's RTU line, timed in emulated time
simhost   the simulator on the board's clock
board     the emulated board on its own thread, console on a pty
fsimage   its littlefs as a host file
rig       all of it wired up; `python -m host_tools.picow` runs it
"""
