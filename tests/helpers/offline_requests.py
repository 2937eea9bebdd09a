"""Stands in for ``requests`` in the Brainwave how-to's run (tests never leave loopback): the
one URL it fetches, the ImageNet class list, comes from fpga-serve's bundled copy."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

CLASS_LIST_URL = (
    "https://raw.githubusercontent.com/Lasagne/Recipes/master/examples/resnet50/"
    "imagenet_classes.txt"
)


@dataclass
class Response:
    text: str
    status_code: int = 200


def get(url: str, **_: object) -> Response:
    if url != CLASS_LIST_URL:
        raise ConnectionError(f"offline: tests do not fetch {url}")
    text = resources.files("fpga_serve.models").joinpath("imagenet_classes.txt").read_text()
    return Response(text)
