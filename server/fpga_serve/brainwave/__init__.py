"""Brainwave compatibility: ``azureml.contrib.brainwave``'s layout over fpga-serve's native SDK.

Code written for Azure ML's Brainwave service (TensorFlow 1 graphs, placeholders, a Session)
runs with only its import lines changed:

    import tensorflow.compat.v1 as tf                        # was: import tensorflow as tf
    import fpga_serve.brainwave.models.utils as utils        # was: azureml.contrib.brainwave...
    from fpga_serve.brainwave.models import QuantizedResnet50
    from fpga_serve.brainwave.pipeline import ModelDefinition, TensorflowStage, BrainWaveStage
    from fpga_serve.brainwave.deploy import Workspace, Model, Webservice, WebserviceException
    from fpga_serve.brainwave import BrainwaveWebservice, BrainwaveImage

This layer is thin on purpose: every rule (preprocessing, the zoo, compilation, the zip) is the
native one (``fpga_serve.preprocessing``, ``fpga_serve.models``, ``fpga_serve.pipeline``, the
client's remote lifecycle ``PredictionClient.deploy``), which
stays the recommended API for new code; docs/brainwave.md has the migration table. Importing
this package switches TensorFlow to graph mode (``tf.compat.v1.disable_eager_execution()``), as
TensorFlow 1 ran, because Brainwave code builds placeholders at module level; fpga-serve's own
TensorFlow 2 work (Keras, the compiler) runs in eager scopes inside it.
"""

from __future__ import annotations

from typing import Any

from fpga_serve.brainwave._tf1 import enter_graph_mode

enter_graph_mode()

__all__ = ["BrainwaveImage", "BrainwaveWebservice"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # imported on use: the deployment module needs the client
        from fpga_serve.brainwave import deploy

        return getattr(deploy, name)
    raise AttributeError(name)
