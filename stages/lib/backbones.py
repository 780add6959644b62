"""The frozen ImageNet backbones, as data: no ML framework is imported here.

Adding a backbone is one entry in BACKBONES: which keras.applications constructor
builds it, how it expects its pixels, the smallest input it allows and the width of
the pooled features it returns. stages/lib/models.py builds them.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelAffine:
    """Per-channel `(x[source] - mean) / std` on 0-255 RGB: Keras's preprocess_input modes, as data."""

    source: tuple[int, int, int] = (0, 1, 2)  # (2, 1, 0) reorders RGB to BGR
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


TORCH = ChannelAffine(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
CAFFE = ChannelAffine(source=(2, 1, 0), mean=(103.939, 116.779, 123.68))
TF = ChannelAffine(mean=(127.5,) * 3, std=(127.5,) * 3)
IN_MODEL = ChannelAffine()  # ConvNeXt and EfficientNet normalise inside the model: don't do it twice


@dataclass(frozen=True)
class Backbone:
    application: str  # constructor in keras.applications
    preprocessing: ChannelAffine
    feature_width: int
    min_size: int = 32
    # ConvNeXt applies its last LayerNorm after pooling, inside the classifier top:
    # build with the top and take this layer's output instead of include_top=False.
    features_layer: str | None = None
    # The fastest float32 extraction engine measured on a CPU; unmeasured: tensorflow
    # (benchmarks/README.md#choosing-the-cpu-engine-per-backbone).
    cpu_engine: str = "tensorflow"


BACKBONES = {
    "densenet121": Backbone("DenseNet121", TORCH, 1024, cpu_engine="openvino"),
    "vgg16": Backbone("VGG16", CAFFE, 512),
    "resnet50": Backbone("ResNet50", CAFFE, 2048),
    "mobilenet_v2": Backbone("MobileNetV2", TF, 1280),
    "convnext_tiny": Backbone("ConvNeXtTiny", IN_MODEL, 768, features_layer="convnext_tiny_head_layernorm",
                              cpu_engine="openvino"),
    "convnext_small": Backbone("ConvNeXtSmall", IN_MODEL, 768, features_layer="convnext_small_head_layernorm"),
    "efficientnetv2_b0": Backbone("EfficientNetV2B0", IN_MODEL, 1280),
}
