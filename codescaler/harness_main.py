"""The script the sandbox's Python runs (stdlib only; next to harness.py inside the sandbox): it imports the harness
and runs it. Python keeps the syntax tree of the script it was started with for as long as that script runs (~1.2 MB
for harness.py), and every page the harness holds is copied into page tables at each fork and walked at each
candidate's exit; an imported module's tree is freed once it is compiled."""

import sys

if __name__ == "__main__":
    import harness  # from this script's directory, sys.path[0] (the harness takes it off before any candidate runs)

    sys.exit(harness.main(sys.argv))
