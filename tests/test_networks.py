"""Networks: the conv net is exactly the sigma-VAE paper's, and every network fits any HxWxC."""

import keras
import numpy as np
import pytest

from keras_vae import networks


def conv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]


def test_conv_encoder_is_the_papers():
    encoder = networks.conv_encoder((28, 28, 1))
    spec = [(layer.filters, layer.kernel_size, layer.strides) for layer in conv_layers(encoder)]
    assert spec == [(32, (3, 3), (1, 1)), (64, (4, 4), (2, 2)), (128, (5, 5), (2, 2))]
    assert all(layer.activation.__name__ == "relu" for layer in conv_layers(encoder))
    assert encoder.output_shape == (None, 7 * 7 * 128)


def test_conv_decoder_is_the_papers_and_costs_93_mflop_forward():
    decoder = networks.conv_decoder((28, 28, 1), latent_dim=20)
    dense = [layer for layer in decoder.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense) == 1 and dense[0].units == 7 * 7 * 128 and dense[0].activation.__name__ == "linear"
    spec = [(type(layer).__name__, layer.filters, layer.kernel_size, layer.strides) for layer in conv_layers(decoder)]
    assert spec == [
        ("Conv2DTranspose", 64, (6, 6), (2, 2)),
        ("Conv2DTranspose", 32, (6, 6), (2, 2)),
        ("NarrowConv2DTranspose", 1, (5, 5), (1, 1)),  # a Conv2DTranspose, computed faster
    ]
    encoder = networks.conv_encoder((28, 28, 1))
    # Multiply-adds, counted from the layer shapes: 2 FLOPs each.
    macs = 0
    for model in (encoder, decoder):
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dense):
                macs += layer.kernel.shape[0] * layer.kernel.shape[1]
            elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
                # A convolution costs one kernel per output pixel; a transposed one, one per input pixel.
                transposed = isinstance(layer, keras.layers.Conv2DTranspose)
                h, w = (layer.input if transposed else layer.output).shape[1:3]
                macs += h * w * int(np.prod(layer.kernel.shape))
    macs += 6272 * 40  # the posterior head's dense layer
    assert 90e6 < 2 * macs < 96e6


def test_beta_vae_conv_is_disentanglement_libs_at_64x64():
    # disentanglement_lib/methods/shared/architectures.py: conv_encoder and deconv_decoder.
    encoder = networks.beta_vae_conv_encoder((64, 64, 1))
    spec = [(layer.filters, layer.kernel_size[0], layer.strides, layer.output.shape[1])
            for layer in conv_layers(encoder)]
    assert spec == [(32, 4, (2, 2), 32), (32, 4, (2, 2), 16), (64, 2, (2, 2), 8), (64, 2, (2, 2), 4)]
    dense = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Dense)]
    assert [(layer.kernel.shape[0], layer.units) for layer in dense] == [(4 * 4 * 64, 256)]
    decoder = networks.beta_vae_conv_decoder((64, 64, 1), latent_dim=10)
    dense = [layer for layer in decoder.layers if isinstance(layer, keras.layers.Dense)]
    assert [(layer.units, layer.activation.__name__) for layer in dense] == [(256, "relu"), (1024, "relu")]
    spec = [(layer.filters, layer.kernel_size[0], layer.strides, layer.activation.__name__)
            for layer in conv_layers(decoder)]
    assert spec == [(64, 4, (2, 2), "relu"), (32, 4, (2, 2), "relu"), (32, 4, (2, 2), "relu"), (1, 4, (2, 2), "linear")]
    assert all(layer.activation.__name__ == "relu" for layer in conv_layers(encoder))
    assert decoder.output_shape == (None, 64, 64, 1) and encoder.output_shape == (None, 256)


@pytest.mark.parametrize("name", networks.NAMES)
@pytest.mark.parametrize("shape", [(28, 28, 1), (27, 27, 1), (32, 32, 3), (64, 64, 3), (13, 17, 2)])
def test_decoders_match_any_image_shape(name, shape):
    encoder_fn, decoder_fn = networks.get(name)
    assert encoder_fn(shape).input_shape == (None, *shape)
    assert decoder_fn(shape, latent_dim=5, params_per_channel=2).output_shape == (None, *shape[:2], 2 * shape[2])


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="Unknown network 'cnn'"):
        networks.get("cnn")
    with pytest.raises(ValueError, match="input_shape"):
        networks.conv_encoder((28, 28))
    with pytest.raises(ValueError, match="output_shape"):
        networks.conv_decoder((28, -1, 1))
