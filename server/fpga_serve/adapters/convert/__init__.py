"""Protocol shaping: each protocol's messages to the data plane's requests and back.

``tfserving`` (TF Serving's PredictionService), ``kserve`` (KServe v2), ``triton`` (Triton's
extensions of KServe v2), ``management`` (fpga-serve's ModelService). Tensors themselves go
through the client's ``fpga_serve_client.convert`` (the same code on both ends of the wire).
"""
