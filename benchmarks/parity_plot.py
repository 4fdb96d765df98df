"""README's picture: the 60-step QA parity table of docs/parity.md ("After the fix") as a plot, each method's
F1 difference to prompt tuning with its paired bootstrap 95% interval. Reads the figures from the doc, so the
picture is the table as it stands:

    python benchmarks/parity_plot.py                 # -> docs/parity.png
"""

import argparse
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## After the fix: QA at the 60-step budget (measured)"
CELL = re.compile(r"([+-]\d+\.\d+) \[([+-]\d+\.\d+), ([+-]\d+\.\d+)\]")


def read_table(doc: Path) -> list[tuple[str, float, float, float]]:
    """(method, Δ F1 vs PT, low, high) per row of the section's table; PT itself is 0 [0, 0]."""
    text = doc.read_text()
    if SECTION not in text:
        raise SystemExit(f"{doc}: no section {SECTION!r}")
    rows = []
    for line in text[text.index(SECTION) :].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or cells[0] in ("method", "---") or len(cells) < 12:
            if rows and not line.startswith("|"):
                break  # the table has ended
            continue
        found = CELL.search(line)
        rows.append((cells[0], *map(float, found.groups())) if found else (cells[0], 0.0, 0.0, 0.0))
    return rows


def plot(rows, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r[1])
    names, mid = [r[0] for r in rows], [r[1] for r in rows]
    err = [[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]]
    colours = ["#c0392b" if "PT-MoE" in n else "#7f8c8d" if n == "PT" else "#2c3e50" for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=120)
    ax.barh(names, mid, xerr=err, color=colours, capsize=3, height=0.6)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("F1 difference to prompt tuning (95% paired bootstrap interval)")
    ax.set_title(
        "QA, SmolLM2-135M, 60 steps, 3 seeds, 8 sets of the former bigbench archive (docs/parity.md)", fontsize=10
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out} ({len(rows)} methods)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "parity.md", help="where the table is")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "parity.png", help="the picture")
    args = p.parse_args(argv)
    plot(read_table(args.doc), args.out)


if __name__ == "__main__":
    main()
