"""fpga-serve: a gRPC inference microservice for FPGA hosts.

Layers (arrows point one way, checked by import-linter in CI):
core <- compiler <- modelzip <- runtime <- service <- adapters; hw depends on core only.
"""

__version__ = "0.1.0"
