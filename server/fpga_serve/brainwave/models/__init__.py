"""``azureml.contrib.brainwave.models``: the zoo (ResNet-50, ResNet-152, DenseNet-121, VGG-16).

Brainwave's names and fpga-serve's (``Densenet121``, ``Vgg16``) both work; all are quantised
featurizers compiled for the overlay (``accel.AccelModel``).
"""

from fpga_serve.brainwave.models.accel import (
    AccelModel,
    DefaultCalibrationWarning,
    QuantizedDensenet121,
    QuantizedResnet50,
    QuantizedResnet152,
    QuantizedVgg16,
)

Densenet121 = QuantizedDensenet121
Vgg16 = QuantizedVgg16

__all__ = [
    "AccelModel",
    "DefaultCalibrationWarning",
    "Densenet121",
    "QuantizedDensenet121",
    "QuantizedResnet50",
    "QuantizedResnet152",
    "QuantizedVgg16",
    "Vgg16",
]
