"""Per-layer keep schedule from data, and INT8 QDQ calibration. (Not built yet.)"""
