"""Compact CNNs for small (32x32-class) inputs. Builders take the input shape and class count and
return a tf_keras functional model ending in a float32 softmax (float32 even under mixed
precision, so the probabilities are not float16)."""
from __future__ import annotations

from .._deps import keras
from .registry import register_model


def _head(x, num_classes):
    layers = keras().layers
    x = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="probs")(x)


def _conv_bn_relu(x, filters, kernel, strides, name, relu=True):
    layers = keras().layers
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def _basic_block(x, filters, strides, name, shortcut_bn):
    """A ResNet basic block: two 3x3 Conv-BN (ReLU between), added to the input (through a strided
    1x1 projection when the block strides: with BatchNorm when `shortcut_bn`, a plain convolution
    with bias otherwise), then ReLU."""
    layers = keras().layers
    y = _conv_bn_relu(x, filters, 3, strides, f"{name}a")
    y = _conv_bn_relu(y, filters, 3, 1, f"{name}b", relu=False)
    if strides != 1:
        if shortcut_bn:
            x = _conv_bn_relu(x, filters, 1, strides, f"{name}_shortcut", relu=False)
        else:
            x = layers.Conv2D(filters, 1, strides=strides, padding="same", kernel_initializer="he_normal",
                              name=f"{name}_shortcut")(x)
    x = layers.Add(name=f"{name}_add")([x, y])
    return layers.ReLU(name=f"{name}_relu")(x)


@register_model(
    "seed_cnn",
    family="plain CNN",
    description="Conv32-MaxPool-Conv64-MaxPool-Conv64-Flatten-Dense64-Dense10 (the Keras CIFAR-10 tutorial network)",
    reference="https://www.tensorflow.org/tutorials/images/cnn",
    sgd_lr=0.02,  # no BatchNorm: at 0.1 the loss turns NaN in the second epoch on full CIFAR-10
)
def seed_cnn(input_shape=(32, 32, 3), num_classes=10):
    k = keras()
    layers = k.layers
    inputs = k.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    return k.Model(inputs, _head(x, num_classes), name="seed_cnn")


@register_model(
    "resnet8",
    family="ResNet",
    description="MLPerf Tiny image-classification ResNet-8: 3 residual stacks of 16/32/64 filters",
    reference="https://github.com/mlcommons/tiny/tree/master/benchmark/training/image_classification",
)
def resnet8(input_shape=(32, 32, 3), num_classes=10):
    k = keras()
    layers = k.layers
    inputs = k.Input(shape=input_shape, name="image")
    x = _conv_bn_relu(inputs, 16, 3, 1, "stem")
    for stage, filters in enumerate((16, 32, 64), start=1):
        # MLPerf Tiny's projection shortcut: a strided 1x1 convolution without BatchNorm.
        x = _basic_block(x, filters, 1 if stage == 1 else 2, f"s{stage}", shortcut_bn=False)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return k.Model(inputs, _head(x, num_classes), name="resnet8")


@register_model(
    "resnet20",
    family="ResNet",
    description="CIFAR ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, 16/32/64 filters; a teacher "
                "to distill the small models from",
    reference="https://arxiv.org/abs/1512.03385",
    teacher=True,
)
def resnet20(input_shape=(32, 32, 3), num_classes=10):
    k = keras()
    layers = k.layers
    inputs = k.Input(shape=input_shape, name="image")
    x = _conv_bn_relu(inputs, 16, 3, 1, "stem")
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            # Projection shortcut (option B) where the block strides: 1x1 convolution and BatchNorm.
            x = _basic_block(x, filters, 2 if stage > 1 and block == 1 else 1, f"s{stage}b{block}", shortcut_bn=True)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return k.Model(inputs, _head(x, num_classes), name="resnet20")


@register_model(
    "mobilenet_tiny",
    family="MobileNet (depthwise-separable)",
    description="MobileNetV1-style: Conv32 then 5 depthwise-separable blocks (64, 128/2, 128, 256/2, 256), ReLU6",
    reference="https://arxiv.org/abs/1704.04861",
)
def mobilenet_tiny(input_shape=(32, 32, 3), num_classes=10):
    k = keras()
    layers = k.layers
    inputs = k.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for i, (filters, strides) in enumerate(((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)), start=1):
        x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"b{i}_dw")(x)
        x = layers.BatchNormalization(name=f"b{i}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"b{i}_dw_relu")(x)
        x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal", name=f"b{i}_pw")(x)
        x = layers.BatchNormalization(name=f"b{i}_pw_bn")(x)
        x = layers.ReLU(6.0, name=f"b{i}_pw_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return k.Model(inputs, _head(x, num_classes), name="mobilenet_tiny")
