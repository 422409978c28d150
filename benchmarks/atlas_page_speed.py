"""How fast the Benefits tab draws a stored atlas (issue 18: "opened on the seed shows the atlas chart from stored
runs in under 2 s").

    XTLENS_DB=path/to/results.sqlite .venv/bin/python benchmarks/atlas_page_speed.py [--visits 3]

The store must hold the seed's default atlas (``xtlens probe atlas --preset seed``: the CLI keeps the atlas table
beside the runs, ``derived_store.keep_atlas``). Each visit is a new Python process (a restarted server, no
in-process cache): the app's first screen, then the Benefits tab, timed from the tab's script run to its end
(Streamlit's ``AppTest``, headless). Prints each visit's time, whether the atlas chart was drawn, and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def visit() -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.session_state["view"] = "Benefits"
    t0 = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t0
    titles = [str(json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "")) for c in at.get("plotly_chart")]
    drawn = any(t.startswith("What each option buys") for t in titles)
    print(json.dumps({"elapsed_s": round(elapsed, 3), "atlas_chart": drawn,
                      "probe": at.radio(key="benefits.probe").value, "errors": [e.value for e in at.exception]}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--visits", type=int, default=3)
    p.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.once:
        visit()
        return 0
    if not os.environ.get("XTLENS_DB"):
        print("set XTLENS_DB to a result store holding the seed's default atlas", file=sys.stderr)
        return 2
    for i in range(args.visits):
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, "--once"], capture_output=True, text=True, check=False)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-400:]
        print(f"visit {i + 1}: {line}  (load {load:.1f} before)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
