"""`python -m bench.train`: the command recorded in the zoo's model cards (zoo/*/model_card.json),
kept working; the training of the tiny models lives in bench/zoo/train.py."""
from __future__ import annotations

from bench.zoo.train import main

if __name__ == "__main__":
    main()
