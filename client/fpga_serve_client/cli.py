"""``fpga-serve-client``: score images (the seed's "label confidence" lines), check health."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fpga_serve_client.client import PredictionClient
from fpga_serve_client.errors import ServiceError, TensorConversionError


def _client(ns: argparse.Namespace) -> PredictionClient:
    roots = Path(ns.ca_cert).read_bytes() if ns.ca_cert else None
    return PredictionClient(
        ns.address,
        use_ssl=ns.ssl or roots is not None,
        access_token=ns.token or os.environ.get("FPGA_SERVE_TOKEN") or None,
        model_name=ns.model,
        timeout=ns.timeout,
        root_certificates=roots,
        protocol=ns.protocol,
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
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        print("fpga-serve-client: health needs the grpcio-health-checking package", file=sys.stderr)
        return 2
    import grpc

    with grpc.insecure_channel(ns.address) as channel:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fpga-serve-client", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", default="127.0.0.1:8500", help="host:port of the server")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    score = sub.add_parser("score", parents=[common], help="score image files, print the top k")
    score.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    score.add_argument("--model", default="", help="model name (default: the server's default)")
    score.add_argument("--top", type=int, default=5, help="how many classes to print")
    score.add_argument("--token", help="API key (or FPGA_SERVE_TOKEN)")
    score.add_argument("--ssl", action="store_true", help="use TLS")
    score.add_argument("--ca-cert", help="PEM file of the CA that signed the server's certificate")
    score.add_argument("--protocol", choices=["tfserving", "v2"], default="tfserving")
    score.set_defaults(func=_score)
    health = sub.add_parser("health", parents=[common], help="grpc.health.v1 status")
    health.add_argument("--service", default="", help="service or model name ('' = server)")
    health.set_defaults(func=_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except (ServiceError, TensorConversionError, OSError) as exc:
        print(f"fpga-serve-client: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
