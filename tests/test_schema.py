import pytest

from sweeper import schema
from sweeper.errors import SweeperError


@pytest.mark.parametrize("family", schema.family_names())
def test_every_default_is_allowed_and_documented(family):
    for name, p in schema.params_of(family).items():
        assert p.name == name and p.doc, name
        assert p.problem(p.default) is None, name


def test_resolve_merges_defaults_once_and_keeps_given_values():
    p = schema.resolve("cnn", {"filters": 8})
    assert p["filters"] == 8 and p["dropout"] == 0.2 and p["batch_size"] == 128
    assert set(p) == set(schema.params_of("cnn"))


@pytest.mark.parametrize(
    "values,expected",
    [
        ({"filtres": 3}, "Unknown parameter(s) for family cnn: filtres"),
        ({"dropout": 1.5}, "cnn.dropout: expected a number <= 0.95. Received: 1.5"),
        ({"batch_size": 0}, "cnn.batch_size: expected a number >= 1"),
        ({"batch_size": 2.5}, "cnn.batch_size: expected a value of type int"),
        ({"learning_rate": 0.0}, "cnn.learning_rate: expected a number > 0"),
        ({"optimizer": "lion"}, "cnn.optimizer: expected one of adam, adamax, nadam"),
        ({"conv_blocks": True}, "cnn.conv_blocks: expected a value of type int"),
        ({"learning_rate": float("nan")}, "cnn.learning_rate: expected a finite number"),
    ],
)
def test_resolve_refuses_what_the_schema_does_not_allow(values, expected):
    with pytest.raises(SweeperError) as error:
        schema.resolve("cnn", values)
    assert expected in str(error.value)


def test_a_float_parameter_takes_an_int_and_text_comes_back_typed():
    assert schema.resolve("mlp", {"learning_rate": 1})["learning_rate"] == 1
    assert schema.from_text("cnn", "filters", "32") == 32
    assert schema.from_text("cnn", "dropout", "0.25") == 0.25
    assert schema.from_text("cnn", "optimizer", "adam") == "adam"


def test_lr_weight_decay_sets_weight_decay_so_the_decay_per_step_stays_put():
    p = schema.resolve("resnet", {"learning_rate": 0.4, "lr_weight_decay": 2e-4})
    assert p["weight_decay"] == pytest.approx(5e-4)
    half = schema.resolve("resnet", {"learning_rate": 0.2, "lr_weight_decay": 2e-4})
    assert half["weight_decay"] == pytest.approx(1e-3)
    # a logged run gives both back: they agree, so it resolves the same
    assert (
        schema.resolve(
            "resnet", {k: p[k] for k in ("learning_rate", "weight_decay", "lr_weight_decay")}
        )
        == p
    )
    with pytest.raises(SweeperError, match="weight_decay or lr_weight_decay"):
        schema.resolve(
            "resnet", {"learning_rate": 0.4, "lr_weight_decay": 2e-4, "weight_decay": 1e-3}
        )
    assert schema.resolve("resnet", {"weight_decay": 1e-3})["weight_decay"] == 1e-3  # 0: as given


def test_a_recipe_is_expressed_in_the_coupled_parameter_where_a_space_searches_it():
    recipe = {"learning_rate": 0.4, "weight_decay": 5e-4, "width": 32}
    coupled = schema.in_terms_of({"learning_rate", "lr_weight_decay"}, recipe)
    assert coupled == {"learning_rate": 0.4, "width": 32, "lr_weight_decay": 2e-4}
    assert schema.in_terms_of({"learning_rate", "weight_decay"}, recipe) == recipe
