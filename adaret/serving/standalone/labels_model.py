"""Triton Python-backend model: logits -> the top label (UTF-8) and softmax probabilities, as ``Session.classify``
computes them (softmax in float64, returned as float32). Label names come from the export's metadata."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.label_names = json.loads(config["parameters"]["label_names"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float64)
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
            names = self.label_names or [f"LABEL_{i}" for i in range(logits.shape[1])]
            labels = np.array([[names[i].encode("utf-8")] for i in probabilities.argmax(axis=1)], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("label", labels), pb_utils.Tensor("probabilities", probabilities)]))
        return responses
