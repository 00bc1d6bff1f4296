"""Problems JSONL -> the parquet file verl trains on, in the layout the codescaler verl plug-in reads.

    python examples/verl/prepare_data.py --problems problems.jsonl --output data/train.parquet

Columns: data_source ("codescaler"), prompt (a one-turn chat of the problem prompt), ability ("code"),
reward_model {style, ground_truth: the problem's tests as JSON text, "" for none}, extra_info
{problem_id, problem_prompt (what the RM sees), index, import_header (the sandbox's, for tests rewards)}.
"""

from __future__ import annotations

import argparse
import json
import os


def verl_rows(problems) -> list[dict]:
    return [{
        "data_source": "codescaler",
        "prompt": [{"role": "user", "content": p.prompt}],
        "ability": "code",
        "reward_model": {"style": "model" if p.tests is None else "rule",
                         "ground_truth": json.dumps(p.tests) if p.tests is not None else ""},
        "extra_info": {"problem_id": p.id, "problem_prompt": p.prompt, "index": i,
                       "import_header": p.extra.get("import_header") or "none"},
    } for i, p in enumerate(problems)]


def main() -> None:
    import pandas as pd

    from codescaler.records import read_problems

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", required=True, help="problems JSONL(.gz) (e.g. from `codescaler prepare`)")
    ap.add_argument("--output", required=True, help="parquet file to write")
    args = ap.parse_args()
    rows = verl_rows(read_problems(args.problems).values())
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    pd.DataFrame(rows).to_parquet(args.output)
    print(f"{len(rows)} problems -> {args.output}")


if __name__ == "__main__":
    main()
