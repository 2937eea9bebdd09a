"""The ``fpga-serve`` command: ``serve`` pipeline zips, ``build`` zoo models, ``inspect`` zips,
``overlay build`` a board's bitstream (fpga_serve.boardflow)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from fpga_serve import __version__
from fpga_serve.core.errors import FpgaServeError
from fpga_serve.core.settings import ServerSettings

log = logging.getLogger("fpga_serve")


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Flags are generated from ServerSettings, so every setting has one (dashes for _)."""
    p = sub.add_parser(
        "serve",
        help="serve pipeline zips over gRPC",
        description="Every flag can also be set as FPGA_SERVE_<NAME> or in the --config file.",
    )
    p.add_argument("models", nargs="*", type=Path, help="pipeline zips to load (FPGA_SERVE_MODELS)")
    p.add_argument("--config", type=Path, help="JSON settings file (FPGA_SERVE_CONFIG)")
    for name, info in ServerSettings.model_fields.items():
        if name == "models":
            continue
        flag = "--" + name.replace("_", "-")
        help_text = (info.description or "").replace("%", "%%")
        annotation = str(info.annotation)
        if info.annotation is bool:
            p.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif annotation.startswith("list["):
            item = int if "int" in annotation else str
            p.add_argument(
                flag, dest=name, action="append", type=item, help=help_text + " (repeat)"
            )
        elif annotation.startswith("typing.Literal"):
            p.add_argument(flag, choices=list(info.annotation.__args__), help=help_text)  # type: ignore[union-attr]
        else:
            kind = (
                int
                if info.annotation is int
                else float
                if info.annotation is float
                else Path
                if "Path" in annotation
                else str
            )
            p.add_argument(flag, type=kind, help=help_text)
    p.set_defaults(func=_serve)


def _serve(ns: argparse.Namespace) -> int:
    overrides = {k: getattr(ns, k, None) for k in ServerSettings.model_fields}
    overrides["models"] = ns.models or None
    settings = ServerSettings.load(ns.config, **overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not settings.models and settings.model_repository is None:
        log.error("no model given: fpga-serve serve MODEL.zip or --model-repository DIR")
        return 2
    keys_file = settings.api_keys_file
    if keys_file is not None and not keys_file.is_file():
        # At start a missing file is a mistake (a Secret not mounted), not a rotation in progress:
        # serving with no valid key would refuse every call without saying why.
        log.error(
            "api_keys_file %s does not exist (FPGA_SERVE_API_KEYS_FILE / --api-keys-file): "
            "mount the key Secret there, or unset it to serve without keys",
            keys_file,
        )
        return 2
    from fpga_serve.adapters.server import Server

    server = Server(settings)
    server.start()
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No lock here (an Event, logging): the handler runs in the main thread between two
        # bytecodes, possibly while that thread holds the very lock (Event.set from a handler
        # stalled the drain by ~1 s).
        signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.load_models(list(settings.models))
    except FpgaServeError as exc:
        log.error("%s", exc)
        server.stop(grace=0)
        return 1
    # One machine-readable line so scripts and tests learn the bound ports.
    print(
        json.dumps(
            {
                "event": "serving",
                "grpc_port": server.grpc_port,
                "metrics_port": server.metrics_port,
                "host": settings.host,
                "models": [f"{m.name}:{m.version}" for m in server.registry.loaded()],
            }
        ),
        flush=True,
    )
    while not signals:
        time.sleep(0.05)
    # Messages on the shutdown path are formatted here: a logging call with an int or float
    # argument makes the first isinstance(arg, Mapping) check of the process walk every Mapping
    # subclass TensorFlow defined (measured 0.7 s on a busy 2-core machine).
    log.info(f"signal {signals[0]}: draining and stopping")
    started = time.monotonic()
    server.stop(grace=settings.shutdown_grace_s)
    log.info(f"stopped in {time.monotonic() - started:.2f} s")
    # Work cut off at the grace may still be computing in a thread (a TensorFlow op cannot be
    # interrupted); its caller has its answer. Leave now instead of waiting for it at
    # interpreter exit: the device and the models were released by stop().
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _add_build(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fpga_serve import build
    from fpga_serve.core.isa import DEFAULT_TARGET, PRESETS

    boards = [name for name, preset in PRESETS.items() if preset.part]

    p = sub.add_parser("build", help="build a zoo pipeline zip (preprocess -> FPGA -> classifier)")
    p.add_argument("model", choices=["resnet50", "resnet152", "densenet121", "vgg16"])
    p.add_argument("-o", "--output", type=Path, required=True, help="the zip to write")
    p.add_argument("--weights", type=Path, help="Keras weight file (*_notop.h5) for the featurizer")
    p.add_argument("--model-path", type=Path, help="folder searched for Keras weight files")
    p.add_argument("--calibration", type=Path, help="folder of representative images")
    p.add_argument("--calibration-count", type=int, default=32, help="images used (default 32)")
    p.add_argument(
        "--method",
        choices=["percentile", "max"],
        default="percentile",
        help="activation range estimate (default: 99.99th percentile of |x|)",
    )
    p.add_argument("--size", type=int, default=224, help="input image size (default 224)")
    p.add_argument("--name", help="model name (default: the architecture)")
    p.add_argument(
        "--target",
        choices=boards,
        default=DEFAULT_TARGET,
        help=f"the accelerator build the program is planned for (default {DEFAULT_TARGET}); "
        "a board must load a bitstream of the same preset",
    )
    p.set_defaults(func=build.build)
    q = sub.add_parser("inspect", help="describe a pipeline zip: stages, layers, MACs, ranges")
    q.add_argument("zip", type=Path)
    q.set_defaults(func=build.inspect)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpga-serve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fpga-serve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_build(sub)
    from fpga_serve.boardflow.cli import add_overlay

    add_overlay(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except FpgaServeError as exc:
        print(f"fpga-serve: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
