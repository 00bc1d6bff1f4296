"""Decode one LiveCodeBench-style blob file through the prepare path; print kept cases and peak memory."""

import json
import sys
import tracemalloc

from codescaler.sources import Ctx, lcb_tests


def main(path):
    with open(path) as f:
        blob = f.read()
    tracemalloc.start()
    conv = lcb_tests(None, blob, None, Ctx("lcb", "", "test", "r", 15, "eval"))
    _, peak = tracemalloc.get_traced_memory()
    print(json.dumps({"kept": conv.kept, "total": conv.total, "first_kept_output": conv.tests["cases"][0]["output"],
                      "kept_mb": sum(len(c["input"]) for c in conv.tests["cases"]) / 2**20,
                      "peak_mb": peak / 2**20}))


if __name__ == "__main__":
    main(sys.argv[1])
