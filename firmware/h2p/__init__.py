# h2pile firmware package. Runs unchanged on MicroPython (ESP32, RP2040, unix
# port) and imports on CPython so the simulator, host tools and tests share
# one source of truth (register maps, thresholds, state and topic names).
VERSION = "0.1.0"
