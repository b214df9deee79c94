"""The per-layer keep schedule from data (the torch side of calibration): ``measure`` re-measures f_l with the
checkpoint's own gates and writes it into a checkpoint; ``plot`` draws the decay."""
