"""fpga-serve: a gRPC inference microservice for FPGA hosts.

Layers (arrows point one way, checked by import-linter in CI; every rule in
docs/architecture.md): core <- compiler <- modelzip <- runtime <- service <- adapters <- cli;
hw depends on core only; the SDK (pipeline, preprocessing, models, build), brainwave and the
board flow sit above the layers.
"""

__version__ = "0.1.0"
