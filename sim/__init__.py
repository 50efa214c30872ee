"""h2pile simulator: the pile's devices on a Modbus RTU line, with physics."""

# The register maps, thresholds and state names live in firmware/h2p (the
# installed package `h2p`): one source of truth, imported rather than copied.
