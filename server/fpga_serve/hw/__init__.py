"""Devices FPGA stages run on: the bit-exact twin, the PYNQ driver, a registry."""
