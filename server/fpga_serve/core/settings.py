"""Server settings: one documented object, read from flags, ``FPGA_SERVE_*`` variables or a file.

Precedence (highest first): command-line flags, environment variables, the optional settings
file (``--config`` / ``FPGA_SERVE_CONFIG``, JSON), defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fpga_serve.core.errors import InvalidInput


class ServerSettings(BaseSettings):
    """Everything a server process is configured by (flags map 1:1, dashes for underscores)."""

    model_config = SettingsConfigDict(env_prefix="FPGA_SERVE_", extra="forbid")

    models: list[Path] = Field(default_factory=list)
    """Pipeline zips to load at start (``fpga-serve serve MODEL.zip ...``)."""

    host: str = "127.0.0.1"
    """Address to bind. Loopback by default; use 0.0.0.0 in a container."""

    port: int = Field(8500, ge=0, le=65535)
    """gRPC port (TF Serving Predict, KServe v2, health, reflection). 0 picks a free port."""

    metrics_port: int = Field(8502, ge=-1, le=65535)
    """Prometheus /metrics HTTP port; -1 disables it, 0 picks a free port."""

    device: Literal["auto", "twin", "pynq"] = "auto"
    """Where FPGA stages run: a board through PYNQ, the bit-exact twin, or auto (board if found)."""

    workers: int = Field(8, ge=1, le=256)
    """Threads answering RPCs."""

    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent (default 64 MiB, room for a batch of JPEGs)."""

    max_batch_size: int = Field(64, ge=1)
    """Largest batch one request may carry."""

    max_image_pixels: int = Field(64_000_000, ge=1)
    """Largest decoded image (width x height) accepted; larger ones are refused unread."""

    log_level: str = "INFO"
    """Python logging level name."""

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> ServerSettings:
        """Build settings from an optional JSON file, the environment and explicit overrides."""
        data: dict[str, Any] = {}
        if config_file is not None:
            try:
                data = json.loads(Path(config_file).read_text())
            except (OSError, ValueError) as exc:
                raise InvalidInput(f"cannot read settings file {config_file}: {exc}") from exc
            if not isinstance(data, dict):
                raise InvalidInput(f"settings file {config_file} must hold a JSON object")
        env = cls()  # environment and defaults
        merged = {**data, **{k: v for k, v in env.model_dump().items() if k in env.model_fields_set}}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(merged)
