"""Embeddings of an array of images through a deploy net and trained weights, with pycaffe."""
from __future__ import annotations

import os

import numpy as np

from caffe_mining.examples.caffe_run import import_pycaffe

__all__ = ["DeployNet"]


class DeployNet:
    """A single-tower deploy net (one ``Input``, one output: the embedding) loaded with trained weights.

    The weights come from a training snapshot: Caffe copies them by layer name, so the deploy net's layers
    carry the names of the training net's first tower.
    """

    def __init__(self, deploy_prototxt: str | os.PathLike, weights: str | os.PathLike):
        caffe = import_pycaffe()
        self.net = caffe.Net(str(deploy_prototxt), caffe.TEST, weights=str(weights))
        if len(self.net.inputs) != 1 or len(self.net.outputs) != 1:
            raise ValueError(f"{deploy_prototxt}: a deploy net needs one input and one output. Got: inputs "
                             f"{list(self.net.inputs)}, outputs {list(self.net.outputs)}")
        self.input_name, self.output_name = self.net.inputs[0], self.net.outputs[0]

    def __call__(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Embeddings (n x D, float32) of images of shape n x H x W (one channel) or n x C x H x W."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[:, None]
        expected = tuple(self.net.blobs[self.input_name].data.shape[1:])
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"images must be n x {' x '.join(map(str, expected))}. Got: {images.shape}")
        parts = []
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            self.net.blobs[self.input_name].reshape(*batch.shape)
            self.net.blobs[self.input_name].data[...] = batch
            self.net.forward()
            parts.append(self.net.blobs[self.output_name].data.reshape(len(batch), -1).copy())
        return np.concatenate(parts)

