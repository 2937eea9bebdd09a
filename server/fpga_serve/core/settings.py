"""Server settings: one documented object, read from flags, ``FPGA_SERVE_*`` variables or a file.

Precedence (highest first): command-line flags, environment variables, the optional settings
file (``--config`` / ``FPGA_SERVE_CONFIG``, JSON), defaults. This module is the only reader of
``FPGA_SERVE_*`` variables in the server (the client reads ``FPGA_SERVE_TOKEN`` for its own CLI);
the rest of the server gets what they say from this object.

Deprecated names, still read with a warning (the current name wins when both are set):
``FPGA_SERVE_TWIN_NATIVE=0`` is ``twin_path`` numpy; ``FPGA_SERVE_DEVICE_TIMEOUT`` is
``device_timeout_s``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fpga_serve.core.boards import BoardError, board
from fpga_serve.core.errors import InvalidInput
from fpga_serve.core.types import DEFAULT_IMAGE_PIXELS, BatchingConfig, RequestLimits

log = logging.getLogger(__name__)

CONFIG_ENV = "FPGA_SERVE_CONFIG"
"""Names the settings file when ``--config`` does not."""
DEPRECATED: dict[str, tuple[str, Callable[[str], Any]]] = {
    "FPGA_SERVE_TWIN_NATIVE": ("twin_path", lambda v: "numpy" if v == "0" else None),
    "FPGA_SERVE_DEVICE_TIMEOUT": ("device_timeout_s", lambda v: v),
}
"""Old variable -> (the setting it is now, its value from the old one's; None: no effect)."""

_LIMITS = RequestLimits()
_BATCHING = BatchingConfig()
"""The defaults of the request-limit and batching settings are these objects' own (one copy)."""


class ServerSettings(BaseSettings):
    """Everything a server process is configured by (flags map 1:1, dashes for underscores)."""

    model_config = SettingsConfigDict(
        env_prefix="FPGA_SERVE_", extra="forbid", use_attribute_docstrings=True
    )

    models: list[Path] = Field(default_factory=list)
    """Pipeline zips to load at start (``fpga-serve serve MODEL.zip ...``)."""

    model_repository: Path | None = None
    """A directory laid out as NAME/VERSION/model.zip; every valid model in it is loaded at
    start, and the KServe v2 repository API loads, reloads and unloads from it."""

    host: str = "127.0.0.1"
    """Address to bind. Loopback by default; use 0.0.0.0 in a container."""

    port: int = Field(8500, ge=0, le=65535)
    """gRPC port (TF Serving Predict, KServe v2, health, reflection). 0 picks a free port."""

    metrics_port: int = Field(8502, ge=-1, le=65535)
    """Prometheus /metrics HTTP port; -1 disables it, 0 picks a free port."""

    device: Literal["auto", "twin", "pynq"] = "auto"
    """Where FPGA stages run: a board through PYNQ, the bit-exact twin, or auto (board if found)."""

    overlay: Path | None = None
    """The overlay bitstream for PYNQ boards (its .hwh beside it); default:
    bitstreams/boards/BOARD/fpga_cnn.bit of this installation, for the board $BOARD names."""

    pynq_simulate: bool = False
    """The PYNQ device is the simulated board (hw/pynq_sim.py, for CI and development): pynq's
    own Overlay, MMIO and buffer code against a register-level model of the accelerator, made
    pynq's active device when the pynq device is selected (pynq never finds it by probing)."""

    pynq_sim_board: str = "zcu104"
    """Which board of bitstreams/boards/boards.json the simulated board is (pynq_simulate)."""

    twin_path: Literal["auto", "native", "numpy"] = "auto"
    """How the twin computes: native (exact int8 GEMM in ONNX Runtime + compiled kernels, when
    this CPU passes its self-check), numpy (float32 BLAS, slower), or auto (native if it can)."""

    twin_threads: int = Field(0, ge=0, le=256)
    """Threads the twin computes with (its int8 GEMMs and kernels, in its worker process or in
    this one); 0: one per core."""

    twin_isolated: bool = True
    """Run the twin in a worker process of its own (as a board runs beside its host), so its
    compute does not contend with the RPC threads for the server's GIL. At 1 in flight the
    worker's pipe cost 0.6-2.7 ms a request on a 2-core VM; since the worker's OpenMP spin was
    shortened, served requests were 1.2-2.4 ms faster with the worker than without it
    (bench/README.md, Table 3)."""

    device_validate: bool = False
    """Validate mode: run every FPGA batch on the twin as well; mismatches are counted in
    fpga_serve_device_validations_total{result="mismatch"} (costs a twin run per batch)."""

    device_timeout_s: float = Field(10.0, gt=0)
    """Longest one run on a board may take (the PYNQ driver's wait for DONE); a run that takes
    longer is a device fault: its requests fail UNAVAILABLE and the device is reset."""

    device_check_interval_s: float = Field(0.5, gt=0)
    """How often a failed device is reset and re-verified (health is NOT_SERVING meanwhile)."""

    workers: int = Field(8, ge=1, le=256)
    """Calls of the serving and model services under way at a time (more wait, their requests
    not yet read: what bounds the memory requests take), and the RPC threads that run what the
    event loop does not run itself."""

    inline_max_us: int = Field(1000, ge=0)
    """A model whose recent runs took less than this (microseconds) is run by the event loop
    that received the call, with no hand-off to a thread and back (that costs ~0.3 ms of CPU
    per call here, more than a small model's run: bench/README.md); slower models run on RPC
    threads. 0: never on the loop. A run on the loop that takes this long or longer (the model
    became slow, or waits on a device for less than 10x this) holds up the other calls for its
    length; a second one within 16 runs on the loop sends the model's next runs to threads: 16
    of them, twice as many each time it happens again (a lone long run, the machine's pause, is
    forgiven)."""

    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent (default 64 MiB, room for a batch of JPEGs)."""

    max_request_fields: int = Field(1 << 18, ge=1024)
    """Most protobuf fields one request message may hold, nested ones included (a packed
    repeated field counts once), counted on the wire bytes before parsing: parsing costs ~50
    bytes per field however short, so this bounds a message of millions of tiny fields."""

    max_batch_size: int = Field(_LIMITS.max_batch_size, ge=1)
    """Largest batch one request may carry (checked from its declared shape, before decoding);
    the device batch is batch_max_size."""

    max_request_elements: int = Field(_LIMITS.max_elements, ge=1)
    """Most elements a request's inputs may declare, in all and in any one dimension (checked
    from the declared shapes, before anything is decoded; a zero beside a huge dimension is
    still refused)."""

    max_request_bytes: int = Field(_LIMITS.max_bytes, ge=1024)
    """Most bytes a request's decoded inputs may take (BYTES: their lengths + 32 per element),
    counted from the declared shapes and TensorFlow's fill rule before anything is decoded."""

    # Dynamic batching (``batching()``): batch_max_size, batch_max_queue_delay_us,
    # batch_preferred_sizes, batch_concurrency, max_queue_size.

    batch_max_size: int = Field(_BATCHING.max_size, ge=1)
    """Dynamic batching: most items per device batch (1 turns batching off); a request's own
    batch is bounded by max_batch_size."""

    batch_max_queue_delay_us: int = Field(_BATCHING.max_queue_delay_us, ge=0)
    """Longest a request waits for others to join its batch. 0: batch only what queued up
    while the device was busy, never delaying a lone request."""

    batch_preferred_sizes: list[int] = Field(default_factory=list)
    """Batch sizes dispatched as soon as they are reached."""

    batch_concurrency: int = Field(_BATCHING.concurrency, ge=1, le=16)
    """Batches of one model executing at once (TF Serving's num_batch_threads). 2 lets the host
    prepare one batch (preprocessing, quantisation, transfer) while a board's device runs
    another; the device still runs one program at a time, and a batch waiting for it was checked
    for deadline and cancellation when it left the queue. On the twin, which computes on the
    host's own cores, 2 gained nothing (bench/README.md)."""

    max_queue_size: int = Field(_BATCHING.max_queue_size, ge=1)
    """Requests waiting per model; one more is answered RESOURCE_EXHAUSTED."""

    max_image_pixels: int = Field(DEFAULT_IMAGE_PIXELS, ge=1)
    """Largest decoded image (width x height, times the frames of an animated GIF) accepted;
    larger ones are refused from their headers, before decoding (default 16 Mpx, 4096 x 4096).
    The preprocessing's resize reads only the window its centre crop samples, so no
    intermediate is larger than the decoded image."""

    max_upload_bytes: int = Field(2 << 30, ge=1024)
    """Largest model zip the remote lifecycle API (ModelService.UploadModel, or
    RepositoryModelLoad with a file: parameter) accepts; an upload declaring more is refused
    (RESOURCE_EXHAUSTED) before a byte is stored, one sending more than it declared is cut off."""

    upload_timeout_s: float = Field(600.0, gt=0)
    """Longest one upload's stream may take, header to last byte. A stream that stalls is
    answered DEADLINE_EXCEEDED then and nothing of it is kept, so a silent client cannot hold a
    model name or staging space longer."""

    api_keys: list[SecretStr] = Field(default_factory=list)
    """Accepted bearer keys (primary, secondary, ...); FPGA_SERVE_API_KEYS='["k1","k2"]'.
    Empty together with api_keys_file: no authentication."""

    api_keys_file: Path | None = None
    """File with one key per line, re-read when it changes (rotation without restart)."""

    metrics_auth: bool = True
    """Require the same keys on /metrics when keys are configured."""

    tls_cert: Path | None = None
    """PEM certificate chain: serve gRPC (and /metrics) over TLS."""

    tls_key: Path | None = None
    """PEM private key for tls_cert."""

    tls_client_ca: Path | None = None
    """PEM CA bundle: require client certificates signed by it (mutual TLS)."""

    shutdown_grace_s: float = Field(10.0, ge=0)
    """On SIGTERM: stop accepting, then give in-flight and queued work this long to finish."""

    log_level: str = "INFO"
    """Python logging level name."""

    @model_validator(mode="before")
    @classmethod
    def _deprecated_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for old, (name, value_of) in DEPRECATED.items():
            raw = os.environ.get(old)
            value = None if raw is None or name in data else value_of(raw)
            if value is not None:
                current = f"FPGA_SERVE_{name.upper()}"
                log.warning("%s=%s is deprecated: use %s=%s", old, raw, current, value)
                data = {**data, name: value}
        return data

    @field_validator("pynq_sim_board")
    @classmethod
    def _known_board(cls, name: str) -> str:
        try:
            return board(name).name
        except BoardError as exc:  # pydantic reports a ValueError as the setting's error
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self

    def request_limits(self) -> RequestLimits:
        """What one request may declare (checked before anything is decoded)."""
        return RequestLimits(
            max_batch_size=self.max_batch_size,
            max_elements=self.max_request_elements,
            max_bytes=self.max_request_bytes,
            max_image_pixels=self.max_image_pixels,
        )

    def batching(self) -> BatchingConfig:
        """Every model's dynamic batching, from the ``batch_*`` settings and ``max_queue_size``."""
        return BatchingConfig(
            max_size=self.batch_max_size,
            max_queue_delay_us=self.batch_max_queue_delay_us,
            preferred_sizes=tuple(self.batch_preferred_sizes),
            max_queue_size=self.max_queue_size,
            concurrency=self.batch_concurrency,
        )

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> ServerSettings:
        """Build settings from a JSON file (``config_file``, else the one FPGA_SERVE_CONFIG
        names, if any), the environment and explicit overrides."""
        data: dict[str, Any] = {}
        if config_file is None and os.environ.get(CONFIG_ENV):
            config_file = Path(os.environ[CONFIG_ENV])
        if config_file is not None:
            try:
                data = json.loads(Path(config_file).read_text())
            except (OSError, ValueError) as exc:
                raise InvalidInput(f"cannot read settings file {config_file}: {exc}") from exc
            if not isinstance(data, dict):
                raise InvalidInput(f"settings file {config_file} must hold a JSON object")
        env = cls()  # environment and defaults
        merged = {
            **data,
            **{k: v for k, v in env.model_dump().items() if k in env.model_fields_set},
        }
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(merged)
