"""The model zoo in Brainwave's shape: QuantizedResnet50, QuantizedResnet152, Densenet121, Vgg16."""

from fpga_serve.models.zoo import (
    ZOO,
    Densenet121,
    QuantizedResnet50,
    QuantizedResnet152,
    RandomWeightsWarning,
    Vgg16,
    imagenet_labels,
)

__all__ = [
    "ZOO",
    "Densenet121",
    "QuantizedResnet50",
    "QuantizedResnet152",
    "RandomWeightsWarning",
    "Vgg16",
    "imagenet_labels",
]
