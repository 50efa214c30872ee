"""h2pile benchmarks (`make bench` -> `python -m bench.run`).

Measures the compiled firmware on the MicroPython unix port against the
simulator with wire timing on, and prints each figure beside its physical
limit or goal as a ratio. No pass/fail: the figures are for reading.
"""
