import dataclasses
from pathlib import Path

import pytest
import yaml

from sweeper import config, space
from sweeper.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
VALID = {
    "dataset": "mnist",
    "engine": "optuna",
    "sampler": "tpe",
    "pruner": "median",
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "budget": {"trials": 4, "timeout_minutes": 5, "max_epochs": 2},
    "families": {
        "cnn": {
            "filters": {"choice": [8, 16]},
            "dropout": {"float": [0.0, 0.5]},
            "learning_rate": {"float": [1e-4, 1e-2], "log": True},
            "conv_blocks": {"int": [1, 2]},
            "kernel_size": 3,
        }
    },
}


def write(tmp_path, body) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def problems_of(tmp_path, **changes) -> list[str]:
    body = {**VALID, **changes}
    with pytest.raises(ConfigError) as error:
        config.load(write(tmp_path, body))
    assert str(tmp_path / "sweep.yaml") in str(error.value)  # the message names the file
    return error.value.problems


def test_a_valid_file_loads_into_a_spec(tmp_path):
    spec = config.load(write(tmp_path, VALID))
    assert spec.trials == 4 and spec.max_epochs == 2 and spec.study == "sweep"
    cnn = spec.families["cnn"]
    assert cnn["filters"] == space.Choice((8, 16))
    assert cnn["learning_rate"] == space.Float(1e-4, 1e-2, None, True)
    assert cnn["conv_blocks"] == space.Int(1, 2) and cnn["kernel_size"] == space.Fixed(3)
    assert spec.keep_models == 3 and spec.save_optimizer is False  # the defaults
    assert config.load(write(tmp_path, {**VALID, "keep_models": "all"})).keep_models is None


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({"dataset": "imagenet"}, "dataset: expected one of mnist, fashion_mnist, cifar10"),
        (
            {"engine": "hyperopt"},
            "engine: expected engine (optuna, keras-tuner). Received: 'hyperopt'",
        ),
        (
            {"sampler": "bayesian"},
            "sampler: expected a sampler of optuna (tpe, random, cmaes, gp, grid, nsga2)",
        ),
        (
            {"pruner": "patience"},
            "pruner: expected pruner (none, median, hyperband, successive-halving)",
        ),
        ({"budget": {"trials": 0}}, "budget.trials: expected a positive number. Received: 0"),
        ({"workers": 0}, "workers: expected a number of workers (1 or more) or auto. Received: 0"),
        ({"workers": "all"}, "workers: expected a number of workers (1 or more) or auto"),
        ({"keep_models": -1}, "keep_models: expected a number of trials (0 or more) or all"),
        ({"keep_models": "best"}, "keep_models: expected a number of trials (0 or more) or all"),
        ({"save_optimizer": "yes"}, "save_optimizer: expected true or false. Received: 'yes'"),
        ({"data": {"image_dir": "pics"}}, "data.image_dir: expected a folder, for a csv: dataset"),
        (
            {"budget": {"trails": 3}},
            "budget.trails: expected one of trials, minutes, search_share, timeout_minutes",
        ),
        (
            {"budget": {"minutes": 30, "timeout_minutes": 10}},
            "budget.timeout_minutes: expected no timeout beside budget.minutes",
        ),
        (
            {"budget": {"minutes": 30}, "refit": {"epochs": 5}},
            "refit.epochs: expected no epochs beside budget.minutes",
        ),
        (
            {"budget": {"minutes": 30, "search_share": 1.5}},
            "budget.search_share: expected a fraction of budget.minutes from 0 (no search)",
        ),
        (
            {"budget": {"search_share": 0}},
            "budget.search_share: expected budget.minutes beside 0 (no search). Received: 0",
        ),
        ({"budget": {"minutes": -1}}, "budget.minutes: expected a positive number"),
        (
            {"families": {"resnet": {"widths": {"choice": ["64/128", "wide"]}}}},
            "families.resnet.widths: expected one of double or widths such as 64/128/128",
        ),
        (
            {"budget": {"target": 98.5}},
            "budget.target: expected a value of val_accuracy to stop at "
            "(between 0 and 1; 0.985 for 98.5%). Received: 98.5",
        ),
        ({"baseline_first": "no"}, "baseline_first: expected true or false. Received: 'no'"),
        (
            {"objective": {"metric": "val_loss", "direction": "maximize"}},
            "objective.direction: expected minimize for val_loss",
        ),
        (
            {"families": {"densenet": {}}},
            "families.densenet: expected one of mlp, cnn, cnn_bn, resnet, transfer",
        ),
        (
            {"families": {"cnn": {"filtres": 3}}},
            "families.cnn.filtres: expected a parameter of cnn: ",
        ),
        (
            {"families": {"cnn": {"dropout": {"float": [0.5, 0.1]}}}},
            "families.cnn.dropout: expected float: low < high (received [0.5, 0.1])",
        ),
        (
            {"families": {"cnn": {"learning_rate": {"float": [0, 1], "log": True}}}},
            "families.cnn.learning_rate: expected float: low > 0 with log: true",
        ),
        (
            {"families": {"cnn": {"filters": {"float": [8, 64]}}}},
            "families.cnn.filters: expected an int range or choice",
        ),
        (
            {"families": {"cnn": {"optimizer": {"choice": []}}}},
            "families.cnn.optimizer: expected choice: a non-empty list",
        ),
        (
            {"families": {"cnn": {"dropout": {"uniform": [0, 1]}}}},
            "families.cnn.dropout: expected exactly one of int, float or choice",
        ),
        (
            {"engine": "keras-tuner", "sampler": "random", "pruner": "median"},
            "pruner: expected none with keras-tuner",
        ),
        ({"epochs": 3}, "epochs: expected one of dataset, data,"),
        (
            {"families": {"cnn": {"optimizer": {"choice": ["adam", "lion"]}}}},
            "families.cnn.optimizer: expected one of adam, adamax, nadam, rmsprop, sgd, adamw for every "
            "value ('lion' is not)",
        ),
        (
            {"families": {"cnn": {"dropout": 1.5}}},
            "families.cnn.dropout: expected a number <= 0.95",
        ),
        (
            {"families": {"cnn": {"batch_size": 0}}},
            "families.cnn.batch_size: expected a number >= 1",
        ),
        (
            {"families": {"cnn": {"learning_rate": -1.0}}},
            "families.cnn.learning_rate: expected a number > 0. Received: -1.0",
        ),
        (
            {"families": {"cnn": {"lr_schedule": "step"}}},
            "families.cnn.lr_schedule: expected one of constant, exponential, cosine",
        ),
        (
            {"families": {"cnn": {"flip": {"choice": ["none", "horizontal"]}}}},
            "families.cnn.flip: expected none on mnist",
        ),
        (  # cnn_bn flips by default: refused on digits unless the file turns it off
            {"families": {"cnn_bn": {}}},
            "families.cnn_bn.flip: expected none on mnist (mirrored images are no longer of "
            "their class). Received: 'horizontal (its default)'",
        ),
        ({"refit": {"epochs": 0}}, "refit.epochs: expected a positive number"),
        (
            {"refit": {"min_epochs": 4}},
            "refit.min_epochs: expected budget.minutes beside it",
        ),
        (
            {"budget": {"minutes": 30}, "refit": {"min_epochs": 1.5}},
            "refit.min_epochs: expected a positive number",
        ),
        (
            {"families": {"cnn": {"batch_size": {"int": [16, 1073741824]}}}},
            "families.cnn.batch_size: expected a number <= 65536 for every value",
        ),
        (
            {
                "families": {
                    "cnn": {"weight_decay": 5e-4, "lr_weight_decay": {"float": [1e-4, 4e-4]}}
                }
            },
            "families.cnn.lr_weight_decay: expected weight_decay or lr_weight_decay (their "
            "product with learning_rate), not both",
        ),
    ],
)
def test_each_mistake_names_its_field_and_what_was_expected(tmp_path, changes, expected):
    problems = problems_of(tmp_path, **changes)
    assert any(expected in p for p in problems), problems


def test_every_problem_is_reported_at_once(tmp_path):
    problems = problems_of(tmp_path, engine="hyperopt", dataset=3, seed="x")
    assert len(problems) >= 3


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("families: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "missing.yaml")


def test_overrides_switch_engine_and_keep_a_sampler_it_knows(tmp_path):
    spec = config.load(write(tmp_path, VALID)).with_overrides(
        engine="keras-tuner", trials=9, max_epochs=None
    )
    assert (spec.engine, spec.sampler, spec.pruner, spec.trials, spec.max_epochs) == (
        "keras-tuner",
        "bayesian",
        "none",
        9,
        2,
    )


def test_target_is_met_in_the_objective_direction(tmp_path):
    spec = config.load(write(tmp_path, {**VALID, "budget": {"trials": 4, "target": 0.9}}))
    assert spec.reached(0.9) and spec.reached(0.95) and not spec.reached(0.89)
    assert not spec.reached(float("nan"))
    by_loss = spec.with_overrides(metric="val_loss", direction="minimize", target=0.1)
    assert by_loss.reached(0.05) and not by_loss.reached(0.2)
    assert not dataclasses.replace(spec, target=None).reached(1.0)


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_sweep_file_is_valid_and_holds_its_baselines(path):
    from sweeper.policy import first_points

    spec = config.load(path)
    assert path.read_text().startswith("# ")  # the first line says how to run it
    from sweeper import baselines

    with_recipe = {f for f in spec.families if baselines.for_family(f, spec.dataset)}
    assert {family for family, _ in first_points(spec)} == with_recipe


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_sweep_file_is_valid(path):
    spec = config.load(path)
    assert path.read_text().startswith("# sweeper sweep examples/")  # how to run it
    assert spec.dataset.startswith("folder:data/cifar_")  # what cifar_folders.py writes


def test_objectives_beyond_the_first_weigh_what_a_model_costs(tmp_path):
    def load(**fields):
        path = tmp_path / "multi.yaml"
        body = {"dataset": "mnist", "families": {"mlp": {"units": 8}}, **fields}
        path.write_text(yaml.safe_dump(body))
        return config.load(path)

    two = [{"metric": "val_accuracy"}, {"metric": "latency_ms", "direction": "minimize"}]
    spec = load(objectives=two, constraints={"params": 1e6})
    assert spec.objectives == [("val_accuracy", "maximize"), ("latency_ms", "minimize")]
    assert spec.constraints == {"params": 1e6}
    refusals = {
        "pruner: expected none with several objectives": {"objectives": two, "pruner": "median"},
        "objectives: expected one objective with keras-tuner": {
            "objectives": two,
            "engine": "keras-tuner",
        },
        "objectives[0].metric: expected the first: one of val_accuracy, val_loss": {
            "objectives": [{"metric": "latency_ms"}, {"metric": "val_accuracy"}]
        },
        "sampler: expected one of tpe, nsga2, random, gp with several": {
            "objectives": two,
            "sampler": "cmaes",
        },
        "constraints.flops: expected a bound on one of params, model_mb, latency_ms": {
            "constraints": {"flops": 3}
        },
        "sampler: expected one of tpe, nsga2, gp with constraints": {
            "constraints": {"params": 10},
            "sampler": "random",
        },
    }
    for message, fields in refusals.items():
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load(**fields)
