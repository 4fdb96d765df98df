"""`ptmoe data prepare|list`."""

import argparse
import sys

from .sources import expand_names, prepare, set_states

SPLITS = ("train", "heldout", "test")


def _counts_cells(splits):
    return "  ".join(f"{splits[sp]:>7}" if sp in splits else f"{'-':>7}" for sp in SPLITS)


def print_sets(counts, file=None):
    """Print {set: {split: count}} as a table."""
    w = max([len("set")] + [len(s) for s in counts])
    print(f"{'set':<{w}}  " + "  ".join(f"{sp:>7}" for sp in SPLITS), file=file)
    for name, c in counts.items():
        print(f"{name:<{w}}  " + _counts_cells(c), file=file)


def print_states(states, file=None):
    """Every known set: its state, split sizes and its source (or why it is missing)."""
    w = max(len(s) for s in states)
    print(f"{'set':<{w}}  {'state':<12}  " + "  ".join(f"{sp:>7}" for sp in SPLITS) + "  source / why", file=file)
    for name, st in states.items():
        where = st.get("source") or st.get("why", "")
        print(f"{name:<{w}}  {st['state']:<12}  {_counts_cells(st.get('splits', {}))}  {where}", file=file)


def cmd_prepare(args):
    try:
        asked = expand_names(args.sets)
    except ValueError as e:
        print(f"ptmoe data prepare: error: {e}", file=sys.stderr)
        return 2
    done = prepare(asked or None, local=args.local, cache_dir=args.cache_dir, force=args.force)
    if done.counts:
        print_sets(done.counts)
    for line in done.missing.values():
        print(line, file=sys.stderr)
    # every set named must be there; a plain `prepare` asks for what its sources can give
    return 0 if done.ok(asked) and done.counts else 1


def cmd_list(args):
    states = set_states(cache_dir=args.cache_dir)
    print_states(states)
    if not any(st["state"] == "prepared" for st in states.values()):
        print("no prepared data: run `ptmoe data prepare`")
        return 1
    return 0


def add_arguments(data):
    """The `data` subcommand's own subcommands (ptmoe.cli wires this module in)."""
    sub = data.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser(
        "prepare",
        help="fetch the sets' sources into the cache and build the splits (default: every set from packages)",
    )
    p.add_argument(
        "sets",
        nargs="*",
        help="sets to prepare, or `mrqa` (the paper's 12 QA sets) and `paper-math` (GSM8K, SVAMP, ASDiv, "
        "MAWPS) from the hub (default: every set whose sources are packages)",
    )
    p.add_argument(
        "--from",
        dest="local",
        default=None,
        metavar="PATH",
        help="a local copy tried first: a package archive (bigbench-1.0.0.tar.gz, a wheel), a folder of its files "
        "or archives, MRQA jsonl(.gz) files, or a dataset saved with `datasets`",
    )
    p.add_argument("--cache-dir", default=None, help="cache root (default: $PTMOE_CACHE or ~/.cache/ptmoe)")
    p.add_argument("--force", action="store_true", help="fetch and rebuild even if prepared")
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("list", help="every known set: prepared (split sizes, source) or unavailable and why")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $PTMOE_CACHE or ~/.cache/ptmoe)")
    p.set_defaults(func=cmd_list)


def run(args):
    return args.func(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ptmoe data")
    add_arguments(parser)
    return run(parser.parse_args(argv))
