"""Per run of a comparison, what each replacement of the routing scored (docs/routing.md):
routed, each expert forced, the uniform mix, and the routing value, from the stored results.

    python benchmarks/routing_replacements.py runs/routing-mix
"""

import json
import sys
from pathlib import Path


def main(root: str) -> None:
    rows = []
    for done in sorted(Path(root, "runs").glob("*/result.json")):
        r = json.loads(done.read_text())
        value = ((r.get("eval") or {}).get("router") or {}).get("routing_value")
        if not value:
            continue
        o = r["config"]["method_options"]
        name = (
            f"{r['config']['method']} experts={o.get('experts')} route_by={o.get('route_by')} "
            f"init={o.get('router_init')} supervised={o.get('source_supervision', 0)}"
        )
        replaced = "  ".join(f"{k} {v:6.2f}" for k, v in value["replaced"].items())
        v = value["value"]
        mi = r["eval"]["router"].get("mutual_information_bits", 0.0)
        rows.append(
            f"{name:68s} seed {r['config']['seed']}  routed {value['routed']:6.2f}  {replaced}  "
            f"value {v[0]:+6.2f} [{v[1]:+.2f}, {v[2]:+.2f}]  MI {mi:.2f}"
        )
    print("\n".join(sorted(rows)))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/routing-mix")
