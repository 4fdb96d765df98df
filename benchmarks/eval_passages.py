"""How many distinct passages the evaluation questions of a config are asked about, per set.

`ptmoe eval` takes `data.max_eval_examples` questions of each set, the first ones in file order unless
`data.eval_sample: per_passage`; a routed
prompt reads mostly the passage, so questions on one passage route alike and a set's expert share
is worth as many draws as it has passages (see docs/parity.md, "Why the demo's expert shares differ").

    python benchmarks/eval_passages.py configs/compare-qa.yaml [key=value ...]
"""

import argparse

from ptmoe.data import load_eval_set
from ptmoe.recipes.compare import shared_config
from ptmoe.recipes.config import merge, parse_override


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    import yaml

    raw = yaml.safe_load(open(args.config))
    for item in args.overrides:
        raw = merge(raw, parse_override(item))
    cfg = shared_config(raw, args.config)
    print("| set | questions | passages |\n|---|---|---|")
    for spec in cfg["data"]["eval"]:
        ex = load_eval_set(spec, cfg["data"], log=lambda *a: None)
        print(f"| {spec} | {len(ex)} | {len({e.get('context', '') for e in ex})} |")


if __name__ == "__main__":
    main()
