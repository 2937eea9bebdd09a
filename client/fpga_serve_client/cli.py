"""``fpga-serve-client``: score images (Brainwave's "label confidence" lines), check health,
deploy, list and delete models on a running server."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fpga_serve_client.client import PredictionClient, make_channel, token_from_environment
from fpga_serve_client.errors import ServiceError, TensorConversionError


def _tls(ns: argparse.Namespace) -> dict[str, Any]:
    """TLS settings from the flags: --ssl, a CA file, a client certificate (mutual TLS)."""
    read = lambda path: Path(path).read_bytes() if path else None  # noqa: E731
    if bool(ns.client_cert) != bool(ns.client_key):
        raise ValueError("--client-cert and --client-key go together")
    roots, chain, key = read(ns.ca_cert), read(ns.client_cert), read(ns.client_key)
    return {
        "use_ssl": ns.ssl or any(x is not None for x in (roots, chain, key)),
        "root_certificates": roots,
        "certificate_chain": chain,
        "private_key": key,
        "server_name": ns.server_name,
    }


def _client(ns: argparse.Namespace) -> PredictionClient:
    return PredictionClient(
        ns.address,
        access_token=ns.token or token_from_environment(),
        model_name=getattr(ns, "model", ""),
        timeout=ns.timeout,
        protocol=getattr(ns, "protocol", "tfserving"),
        **_tls(ns),
    )


def _score(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        for index, image in enumerate(ns.images):
            scores = client.score_file(image)
            if len(ns.images) > 1:
                print(f"{'' if index == 0 else chr(10)}{image}:")
            for label, confidence in client.top_k(scores, ns.top):
                print(f"{label} confidence: {confidence:.4f}")
    return 0


def _health(ns: argparse.Namespace) -> int:
    target = ns.address
    with make_channel(target, **_tls(ns)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=ns.service), timeout=ns.timeout
            )
        except grpc.RpcError as exc:
            print(f"fpga-serve-client: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if status == "SERVING" else 1


class _UploadProgress:
    """``deploy MODEL.zip``'s progress line on stderr (every 5%, and at the end)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.shown = -1

    def __call__(self, sent: int, total: int) -> None:
        percent = 100 * sent // max(total, 1)
        if percent // 5 == self.shown // 5 and sent < total:
            return
        self.shown = percent
        end = "\n" if sent >= total else ""
        print(
            f"\ruploading {self.label}: {percent:3d}% ({sent / 1e6:.1f} of {total / 1e6:.1f} MB)",
            end=end,
            file=sys.stderr,
            flush=True,
        )


def _deploy(ns: argparse.Namespace) -> int:
    path = Path(ns.zip)
    with _client(ns) as client:
        progress = _UploadProgress(path.name) if not ns.quiet else None
        status = client.upload(
            path,
            ns.name,
            ns.version,
            load=not ns.no_load,
            progress=progress,
            timeout=ns.upload_timeout,
        )
    print(f"{status.name} version {status.version}: {status.state}")
    return 0


def _models(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        models = client.models(ns.name or "")
    print(f"{'model':24} {'version':>7} {'state':12} {'stored':>12}  reason")
    for m in models:
        stored = f"{m.size / 1e6:.1f} MB" if m.stored else "-"
        print(f"{m.name:24} {m.version:>7} {m.state:12} {stored:>12}  {m.reason}")
    return 0


def _delete(ns: argparse.Namespace) -> int:
    with _client(ns) as client:
        deleted = client.delete_model(ns.name, ns.version)
    for m in deleted:
        print(f"deleted {m.name} version {m.version}")
    return 0


class _ShowDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it has none (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default in (None, False, argparse.SUPPRESS)
            or ("default" in text)
        ):
            return text
        return f"{text} (default: {default if default != '' else repr('')})".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpga-serve-client", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default="127.0.0.1:8500", help="host:port of the server")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    tls = common.add_argument_group("TLS")
    tls.add_argument("--ssl", action="store_true", help="use TLS (implied by the files below)")
    tls.add_argument("--ca-cert", help="PEM file of the CA that signed the server's certificate")
    tls.add_argument("--client-cert", help="PEM client certificate chain, for mutual TLS")
    tls.add_argument("--client-key", help="PEM private key of --client-cert")
    tls.add_argument(
        "--server-name",
        help="name to check the server's certificate against, if not the address's host",
    )
    defaults = _ShowDefaults
    keyed = argparse.ArgumentParser(add_help=False, parents=[common])
    keyed.add_argument("--token", help="API key (default: $FPGA_SERVE_TOKEN)")
    score = sub.add_parser(
        "score",
        parents=[keyed],
        formatter_class=defaults,
        help="score image files, print the top k",
        description="Score image files and print the top k 'label confidence' lines.",
    )
    score.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    score.add_argument(
        "--model", default="", help="model name ('': the server's only or default model)"
    )
    score.add_argument("--top", type=int, default=5, help="how many classes to print")
    score.add_argument(
        "--protocol",
        choices=["tfserving", "v2"],
        default="tfserving",
        help="TF Serving Predict or KServe v2 ModelInfer",
    )
    score.set_defaults(func=_score)
    deploy = sub.add_parser(
        "deploy",
        parents=[keyed],
        formatter_class=defaults,
        help="upload a pipeline zip to the server's repository and load it",
        description="Upload a pipeline zip (streamed, sha256-checked, validated by the server) "
        "into the server's model repository and load it; progress on stderr.",
    )
    deploy.add_argument("zip", help="the pipeline zip (ModelDefinition.save, fpga-serve build)")
    deploy.add_argument("--name", required=True, help="model name on the server")
    deploy.add_argument("--version", help="version number (default: the next one)")
    deploy.add_argument("--no-load", action="store_true", help="store it without loading it")
    deploy.add_argument("--quiet", action="store_true", help="no progress line")
    deploy.add_argument(
        "--upload-timeout",
        type=float,
        default=600.0,
        help="seconds for the upload, validation and load",
    )
    deploy.set_defaults(func=_deploy)
    models = sub.add_parser(
        "models",
        parents=[keyed],
        formatter_class=defaults,
        help="list models and versions with their state",
    )
    models.add_argument("name", nargs="?", help="only this model")
    models.set_defaults(func=_models)
    delete = sub.add_parser(
        "delete",
        parents=[keyed],
        formatter_class=defaults,
        help="unload (in-flight requests finish) and remove a model or one version",
    )
    delete.add_argument("name", help="model name")
    delete.add_argument("--version", help="only this version (default: every version)")
    delete.set_defaults(func=_delete)
    health = sub.add_parser(
        "health",
        parents=[common],
        formatter_class=defaults,
        help="grpc.health.v1 status (exit 0 when SERVING)",
        description="Print the grpc.health.v1 status; exit 0 when SERVING, 1 otherwise.",
    )
    health.add_argument(
        "--service", default="", help="service or model name ('': the whole server)"
    )
    health.set_defaults(func=_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except (ServiceError, TensorConversionError, OSError, ValueError) as exc:
        print(f"fpga-serve-client: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
