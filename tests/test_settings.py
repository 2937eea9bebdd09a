"""The settings object is what the server is configured by: request limits and batching are
built from it with one set of defaults (issue 16)."""

from __future__ import annotations

import pytest
from fpga_serve.core.settings import ServerSettings
from fpga_serve.core.types import BatchingConfig, RequestLimits


def test_limits_and_batching_are_built_from_the_settings_with_the_servers_defaults() -> None:
    settings = ServerSettings()
    assert settings.batching() == BatchingConfig()
    assert settings.request_limits() == RequestLimits()
    # The documented defaults (README, Settings): batches of at most 64 per request, dynamic
    # batching up to 8 with no added delay, a queue of 128, one batch at a time.
    assert BatchingConfig() == BatchingConfig(8, 0, (), 128, 1)
    assert RequestLimits().max_batch_size == 64


def test_every_batching_and_limit_setting_reaches_its_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "BATCH_MAX_SIZE": "5",
        "BATCH_MAX_QUEUE_DELAY_US": "700",
        "BATCH_PREFERRED_SIZES": "[2, 4]",
        "MAX_QUEUE_SIZE": "9",
        "BATCH_CONCURRENCY": "3",
        "MAX_BATCH_SIZE": "11",
        "MAX_REQUEST_ELEMENTS": "12345",
        "MAX_REQUEST_BYTES": "54321",
        "MAX_IMAGE_PIXELS": "999",
    }.items():
        monkeypatch.setenv(f"FPGA_SERVE_{name}", value)
    settings = ServerSettings()
    assert settings.batching() == BatchingConfig(
        max_size=5, max_queue_delay_us=700, preferred_sizes=(2, 4), max_queue_size=9, concurrency=3
    )
    assert settings.request_limits() == RequestLimits(
        max_batch_size=11, max_elements=12345, max_bytes=54321, max_image_pixels=999
    )
