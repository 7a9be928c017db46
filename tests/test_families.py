import numpy as np
import pytest

from sweeper import families
from sweeper.errors import SweeperError
from sweeper.families import transfer

TINY = {
    "mlp": {"units": 8},
    "cnn": {"filters": 4, "dense_units": 8},
    "cnn_bn": {"filters": 4, "dense_units": 8},
    "transfer": {"weights": "none", "backbone": "mobilenet_v2", "input_size": 32,
                 "dense_units": 8},
}


@pytest.mark.parametrize("family", sorted(families.FAMILIES))
@pytest.mark.parametrize("input_shape,n_classes", [((28, 28, 1), 10), ((32, 24, 3), 2)])
def test_every_family_builds_and_trains_a_step(family, input_shape, n_classes):
    model = families.get(family).build(TINY[family], input_shape, n_classes)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 255, size=(8, *input_shape), dtype=np.uint8)
    y = np.arange(8) % n_classes
    weights_before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    probs = model.predict(x, verbose=0)
    assert probs.shape == (8, n_classes)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)  # softmax on raw pixels
    assert any(not np.array_equal(a, b) for a, b in zip(weights_before, model.get_weights()))


@pytest.mark.parametrize("params,shape,count", [
    ({"conv_blocks": 1, "filters": 32, "dense_units": 100}, (28, 28, 1), 628_630),  # B2
    ({"conv_blocks": 2, "filters": 32, "dense_units": 100}, (32, 32, 3), 430_102),  # B3
])
def test_cnn_reproduces_the_documented_parameter_counts(params, shape, count):
    assert families.get("cnn").build(params, shape, 10).count_params() == count


def test_transfer_freezes_the_backbone_then_fine_tunes_its_last_layers():
    params = {"weights": "none", "backbone": "vgg16", "input_size": 32, "dense_units": 8}
    model = families.get("transfer").build(params, (28, 28, 1), 3)
    base = next(layer for layer in model.layers if layer.name.startswith("vgg16"))
    assert not base.trainable
    transfer.fine_tune(model, {**params, "fine_tune_layers": 4})
    trainable = [layer.name for layer in base.layers if layer.trainable]
    assert trainable == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]


def test_transfer_reads_a_local_weights_file(tmp_path):
    import keras

    path = tmp_path / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)
                             ).save_weights(path)
    model = families.get("transfer").build(
        {"weights": str(path), "input_size": 32, "dense_units": 4}, (32, 32, 3), 2)
    assert model.count_params() > 14_000_000


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(SweeperError, match="Known: mlp, cnn, cnn_bn, transfer"):
        families.get("resnet")
