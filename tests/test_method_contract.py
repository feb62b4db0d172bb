"""Every method shipped in methods/ passes the method contract (bench/contract.py).

Methods with their own tests/test_method_<name>.py (what `python -m bench new-method` writes)
run the contract there; every other method file is covered here, with the smoke grid's
hyperparameters (tiny models) where config/smoke.yaml lists it.
"""
from __future__ import annotations

from pathlib import Path

from bench.contract import contract_for, smoke_config
from methods import registry

HERE = Path(__file__).resolve().parent


def _covered_here() -> dict[str, dict]:
    smoke = smoke_config()["methods"]
    return {name: dict(smoke.get(name) or {}) for name in registry.available()
            if registry.origin(name).startswith("methods/")
            and not (HERE / f"test_method_{name}.py").exists()}


for _name, _params in _covered_here().items():
    _cls_name = f"TestContract_{_name}"
    globals()[_cls_name] = type(_cls_name, (contract_for(_name),),
                                {"method": _name, "params": _params, "__module__": __name__})
