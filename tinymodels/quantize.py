"""Full-integer int8 conversion shared by the training scripts (TensorFlow, train extra only)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt


def to_tflite_int8(model: Any, representative: npt.NDArray[np.float32]) -> bytes:
    import tensorflow as tf

    def rep() -> Any:
        for row in representative:
            yield [row[None, :]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # TF's converter warns that int8 input statistics were "not specified" although the
        # representative dataset gives them; the quantisation it produces is the intended one.
        warnings.filterwarnings("ignore", "Statistics for quantized inputs", UserWarning)
        return bytes(conv.convert())
