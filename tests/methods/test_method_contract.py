"""Every method shipped in methods/ passes the method contract (bench/tools/contract.py).

Methods whose own tests/methods/test_method_<name>.py runs the contract (what `python -m bench
new-method` writes) are covered there; every other method file is covered here, with the smoke grid's
hyperparameters (tiny models) where config/smoke.yaml lists it.
"""
from __future__ import annotations

from pathlib import Path

from bench.tools.contract import contract_for, smoke_config
from methods import registry

HERE = Path(__file__).resolve().parent


def _covered_here() -> dict[str, dict]:
    smoke = smoke_config()["methods"]
    return {name: dict(smoke.get(name) or {}) for name in registry.available()
            if registry.origin(name).startswith("methods/")
            and not _runs_the_contract(HERE / f"test_method_{name}.py")}


def _runs_the_contract(own: Path) -> bool:
    return own.exists() and "from bench.tools.contract import" in own.read_text()


for _name, _params in _covered_here().items():
    _cls_name = f"TestContract_{_name}"
    globals()[_cls_name] = type(_cls_name, (contract_for(_name),),
                                {"method": _name, "params": _params, "__module__": __name__})
