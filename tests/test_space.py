import optuna
import pytest

from sweeper import space
from sweeper.engines import keras_tuner_engine, optuna_engine

FAMILIES = {
    "cnn": {
        "filters": space.Choice((16, 32)),
        "dropout": space.Float(0.0, 0.5, 0.05),
        "learning_rate": space.Float(1e-4, 1e-2, None, True),
        "conv_blocks": space.Int(1, 3),
        "decay_steps": space.Int(100, 1000, 1, True),
        "kernel_size": space.Fixed(3),
    },
    "mlp": {"units": space.Int(32, 256, 32), "dropout": space.Float(0.1, 0.3)},
}


def optuna_space():
    """Every distribution Optuna sees, one family at a time (define-by-run)."""
    study = optuna.create_study()
    found = {}
    for family, params in FAMILIES.items():
        trial = study.ask()
        trial.suggest_categorical("family", list(FAMILIES))
        for name, p in params.items():
            if not isinstance(p, space.Fixed):
                optuna_engine.suggest(trial, space.qualified(family, name), p)
        found.update(trial.distributions)
    return found


def test_both_engines_see_the_same_names_and_ranges():
    import keras_tuner as kt

    from_optuna = optuna_space()
    hp = kt.HyperParameters()
    keras_tuner_engine.declare(hp, FAMILIES)
    from_kt = {p.name: p.get_config() for p in hp.space}
    assert (
        set(from_optuna)
        == set(from_kt)
        == {
            "family",
            "cnn.filters",
            "cnn.dropout",
            "cnn.learning_rate",
            "cnn.conv_blocks",
            "cnn.decay_steps",
            "mlp.units",
            "mlp.dropout",
        }
    )
    for name, dist in from_optuna.items():
        cfg = from_kt[name]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            assert list(dist.choices) == list(cfg["values"]), name
            continue
        assert (dist.low, dist.high) == (cfg["min_value"], cfg["max_value"]), name
        assert dist.log == (cfg["sampling"] == "log"), name
        if dist.step is not None and not dist.log:
            assert dist.step == cfg["step"], name


def test_kt_scopes_each_family_parameters_under_its_choice():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    keras_tuner_engine.declare(hp, FAMILIES)
    hp.values["family"] = "mlp"
    assert hp.is_active(hp._hps["mlp.units"][0])
    assert not hp.is_active(hp._hps["cnn.filters"][0])


@pytest.mark.parametrize(
    "param,inside,outside",
    [
        (space.Int(1, 9, 2), 5, 4),
        (space.Float(0.0, 0.5, 0.05), 0.2, 0.22),
        (space.Float(1e-4, 1e-2, None, True), 1e-3, 0.1),
        (space.Choice(("adam", "sgd")), "sgd", "adamax"),
        (space.Fixed(3), 3, 4),
    ],
)
def test_contains(param, inside, outside):
    assert param.contains(inside) and not param.contains(outside)


def test_baseline_point_keeps_searched_values_and_checks_fixed_ones():
    params = {"filters": space.Choice((16, 32)), "kernel_size": space.Fixed(3)}
    assert space.baseline_point(params, {"filters": 32}, {"kernel_size": 3}) == {"filters": 32}
    assert space.baseline_point(params, {"filters": 64}, {"kernel_size": 3}) is None
    assert space.baseline_point(params, {"filters": 32, "kernel_size": 5}, {}) is None


def test_grid_lists_discrete_values_and_refuses_continuous_ranges():
    grid = space.grid({"cnn": {"filters": space.Choice((16, 32)), "blocks": space.Int(1, 3)}})
    assert grid == {"family": ["cnn"], "cnn.filters": [16, 32], "cnn.blocks": [1, 2, 3]}
    assert space.grid({"cnn": {"dropout": space.Float(0.0, 0.5)}}) is None
