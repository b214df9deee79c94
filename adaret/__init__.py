"""adaret: Adaptive Retention for Transformer encoders.

Stages (data flows one way): modeling -> training -> export -> graph_passes -> calibration -> engines -> runtime.
"""

__version__ = "0.1.0"
