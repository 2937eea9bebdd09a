"""Keras/TF graph -> overlay program: passes, quantizer, calibration."""
