"""Strip what an executed notebook shows but does not teach: progress bars frozen in their first state.

    python scripts/clean_notebooks.py notebooks/*.ipynb        # in place; prints what it removed
    python scripts/clean_notebooks.py --check notebooks/*.ipynb  # exit 1 if anything would be removed

A tqdm.auto bar is a Jupyter widget: executed headless (nbconvert, papermill) it is saved as its text
fallback in the state it was created in ("runs:   0%|  | 0/12"), which a reader takes for a run that
did nothing. Those outputs, and tqdm's text bars on stderr, are removed; every other output (tables,
figures, printed results, interactive widgets such as notebook 03's slider) is kept byte for byte.
tests/test_notebook_outputs.py checks the committed notebooks.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PROGRESS = re.compile(r"^[^\n|]*\d+%\|[^\n]*\|\s*\d+/\d*")  # "<desc>: 12%|##   | 3/25 [...]"
WIDGET = "application/vnd.jupyter.widget-view+json"


def is_progress(output: dict) -> bool:
    """A tqdm bar: a widget whose text fallback is a bar, or a stderr stream made of bars only."""
    if output.get("output_type") == "display_data" and WIDGET in output.get("data", {}):
        return bool(PROGRESS.match("".join(output["data"].get("text/plain", ""))))
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        lines = [x for x in re.split(r"[\r\n]+", "".join(output.get("text", ""))) if x.strip()]
        return bool(lines) and all(PROGRESS.match(x) for x in lines)
    return False


def prune_widget_state(nb: dict) -> None:
    """Keep only the saved widget models that a remaining output shows (and the models those refer to);
    without any, the notebook's widget metadata goes."""
    saved = nb.get("metadata", {}).get("widgets", {})
    key = "application/vnd.jupyter.widget-state+json"
    state = saved.get(key, {}).get("state", {})
    todo = [o["data"][WIDGET]["model_id"] for c in nb["cells"] for o in c.get("outputs", [])
            if WIDGET in o.get("data", {})]
    keep: set[str] = set()
    while todo:
        mid = todo.pop()
        if mid in keep or mid not in state:
            continue
        keep.add(mid)
        todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[mid]))
    if keep:
        saved[key]["state"] = {k: v for k, v in state.items() if k in keep}
    elif "widgets" in nb.get("metadata", {}):
        del nb["metadata"]["widgets"]


def clean(nb: dict) -> int:
    """Remove the progress outputs of every code cell, and the widget state only they used, in place;
    return how many outputs were removed."""
    removed = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        kept = [o for o in cell.get("outputs", []) if not is_progress(o)]
        removed += len(cell.get("outputs", [])) - len(kept)
        cell["outputs"] = kept
    prune_widget_state(nb)
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook has progress output")
    args = ap.parse_args(argv)
    dirty = 0
    for path in args.notebooks:
        text = path.read_text()
        nb = json.loads(text)
        n = clean(nb)
        new = json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"
        if new != text:
            dirty += 1
            print(f"{path}: {n} progress output(s) and unused widget state {'found' if args.check else 'removed'}")
            if not args.check:
                path.write_text(new)
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
