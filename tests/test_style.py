"""House rules that a linter cannot see."""

import importlib
import inspect
import pkgutil

import sweeper

MODULES = [
    importlib.import_module(m.name) for m in pkgutil.walk_packages(sweeper.__path__, "sweeper.")
]


def public_functions():
    for module in MODULES:
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for method_name, method in vars(obj).items():
                    if (
                        inspect.isfunction(method)
                        and method.__qualname__.startswith(f"{name}.")  # not typing's
                        and (not method_name.startswith("_") or method_name == "__init__")
                    ):
                        yield f"{module.__name__}.{name}.{method_name}", method


def test_every_public_function_has_type_hints():
    missing = []
    for where, function in public_functions():
        function = inspect.unwrap(function)
        signature = inspect.signature(function)
        untyped = [
            p
            for p in signature.parameters.values()
            if p.name not in ("self", "cls") and p.annotation is p.empty
        ]
        no_return = (
            signature.return_annotation is signature.empty and function.__name__ != "__init__"
        )
        if untyped or no_return:
            missing.append(where)
    assert not missing, f"add type hints to: {', '.join(missing)}"


def test_only_tracking_imports_mlflow_and_each_engine_its_library():
    owners = {
        "mlflow": "sweeper.tracking",
        "optuna": "sweeper.engines.optuna_engine",
        "keras_tuner": "sweeper.engines.keras_tuner_engine",
    }
    for module in MODULES:
        source = inspect.getsource(module)
        for library, owner in owners.items():
            imports = f"import {library}" in source or f"from {library}" in source
            assert not imports or module.__name__.startswith(owner), (module.__name__, library)
