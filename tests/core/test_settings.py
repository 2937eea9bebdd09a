"""The settings object is the server's one reader of FPGA_SERVE_* variables, and what the rest
of the server is configured by: request limits and batching are built from it with one set of
defaults, device knobs reach the devices, deprecated names still work (issue 16)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from fpga_serve.core.settings import ServerSettings
from fpga_serve.core.types import BatchingConfig, RequestLimits

SERVER = Path(__file__).resolve().parents[2] / "server" / "fpga_serve"
SETTINGS = SERVER / "core" / "settings.py"

PREFIX = "FPGA_SERVE_"


def variable_names(source: str) -> list[str]:
    """The string constants of ``source`` that name an FPGA_SERVE_* variable or begin one: how
    a module reads one (``os.environ.get("FPGA_SERVE_X")``, ``NAME = "FPGA_SERVE_X"`` then
    ``os.getenv(NAME)``, ``f"FPGA_SERVE_{name}"``). Docstrings and messages that mention a
    variable in their text are not reads."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith(PREFIX)
        and id(node) not in docstrings
    ]


def test_no_module_but_the_settings_reads_an_fpga_serve_variable() -> None:
    readers = {
        str(path.relative_to(SERVER)): names
        for path in SERVER.rglob("*.py")
        if path != SETTINGS and (names := variable_names(path.read_text()))
    }
    assert readers == {}
    assert set(variable_names(SETTINGS.read_text())) >= {PREFIX, "FPGA_SERVE_CONFIG"}


@pytest.mark.parametrize(
    "read",
    [
        'os.environ.get("FPGA_SERVE_PYNQ_SIMULATE") == "1"',
        'SIM_BOARD = "FPGA_SERVE_PYNQ_SIM_BOARD"\nos.environ.get(SIM_BOARD, "zcu104")',
        'os.environ["FPGA_SERVE_X"]',
        'os.getenv(f"FPGA_SERVE_{name.upper()}")',
    ],
)
def test_the_guard_sees_every_way_of_reading_a_variable(read: str) -> None:
    module = f'"""Mentions FPGA_SERVE_X in its docstring."""\nimport os\n{read}\n'
    assert variable_names(module)
    assert not variable_names('"""Mentions FPGA_SERVE_X."""\nlog.info("set FPGA_SERVE_X")\n')


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


def test_the_settings_file_named_by_the_environment_is_read_by_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"workers": 3, "batch_max_size": 2}))
    monkeypatch.setenv("FPGA_SERVE_CONFIG", str(config))
    settings = ServerSettings.load()
    assert (settings.workers, settings.batch_max_size) == (3, 2)
    monkeypatch.setenv("FPGA_SERVE_WORKERS", "4")  # the environment wins over the file
    assert ServerSettings.load().workers == 4
    assert ServerSettings.load(workers=5).workers == 5  # and a flag over both


def test_deprecated_variables_still_work_and_the_current_name_wins(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FPGA_SERVE_TWIN_NATIVE", "0")
    monkeypatch.setenv("FPGA_SERVE_DEVICE_TIMEOUT", "2.5")
    settings = ServerSettings.load()
    assert (settings.twin_path, settings.device_timeout_s) == ("numpy", 2.5)
    assert "FPGA_SERVE_TWIN_NATIVE=0 is deprecated" in caplog.text
    assert "FPGA_SERVE_DEVICE_TIMEOUT=2.5 is deprecated" in caplog.text
    monkeypatch.setenv("FPGA_SERVE_TWIN_NATIVE", "1")  # never meant anything but the default
    assert ServerSettings().twin_path == "auto"
    monkeypatch.setenv("FPGA_SERVE_TWIN_NATIVE", "0")
    monkeypatch.setenv("FPGA_SERVE_TWIN_PATH", "native")
    monkeypatch.setenv("FPGA_SERVE_DEVICE_TIMEOUT_S", "7")
    settings = ServerSettings.load()
    assert (settings.twin_path, settings.device_timeout_s) == ("native", 7.0)
    assert ServerSettings.load(device_timeout_s=1.0).device_timeout_s == 1.0


def test_device_settings_reach_the_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from fpga_serve.adapters.server import Server
    from fpga_serve.hw.pynq_device import PynqDevice
    from fpga_serve.hw.registry import select_device
    from fpga_serve.hw.twin import gemm

    monkeypatch.setenv("FPGA_SERVE_TWIN_THREADS", "3")
    monkeypatch.setenv("FPGA_SERVE_DEVICE_TIMEOUT_S", "4.5")
    monkeypatch.setenv("FPGA_SERVE_TWIN_ISOLATED", "0")  # the twin in this process
    options = Server(ServerSettings(metrics_port=-1)).devices.options
    assert (options["twin_threads"], options["device_timeout_s"]) == (3, 4.5)
    monkeypatch.setitem(gemm._THREADS, "threads", 0)
    select_device("twin", options)
    assert gemm.twin_threads() == 3
    seen: dict[str, object] = {}
    monkeypatch.setattr(PynqDevice, "__init__", lambda self, *a: seen.update(args=a))
    PynqDevice.create(options)
    assert seen["args"] == (None, 4.5, None)  # pynq's active device: the board pynq finds


def test_the_simulated_board_is_the_settings_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    from fpga_serve.adapters.server import Server
    from fpga_serve.hw.pynq_device import PynqDevice
    from fpga_serve.hw.pynq_sim import SimulatedPynqDevice

    monkeypatch.setenv("FPGA_SERVE_PYNQ_SIMULATE", "1")
    monkeypatch.setenv("FPGA_SERVE_PYNQ_SIM_BOARD", "kv260")
    options = Server(ServerSettings(metrics_port=-1)).devices.options
    assert (options["pynq_simulate"], options["pynq_sim_board"]) == (True, "kv260")
    seen: dict[str, object] = {}
    monkeypatch.setattr(PynqDevice, "__init__", lambda self, *a: seen.update(args=a))
    PynqDevice.create(options)
    pdev = seen["args"][2]  # type: ignore[index]
    assert isinstance(pdev, SimulatedPynqDevice) and pdev.board.name == "kv260"
    monkeypatch.setenv("FPGA_SERVE_PYNQ_SIM_BOARD", "no-such-board")
    with pytest.raises(ValueError, match="unknown board 'no-such-board'"):
        ServerSettings()
