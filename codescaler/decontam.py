"""Decontamination: drop training problems whose statements overlap an evaluation set's.

Statements are lower-cased, split into alphanumeric words, stripped of a short
stop-word list (so articles and "is/are" rewordings do not matter) and cut
into word n-grams (default 3). A training problem's score against an eval
problem is |shared n-grams| / min(|train n-grams|, |eval n-grams|) (the
overlap coefficient, so a short eval statement pasted into a longer training
one still scores 1.0). It is dropped when the best score reaches `threshold`
with at least `min_shared` shared n-grams.

N-grams that appear in more than `boilerplate_frac` of the eval problems (and
in more than 3) are prompt boilerplate ("read the input from standard input"),
not content, and are ignored; so are the fixed lines `policy_prompt` adds.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from codescaler.data import prompt_statement

STOPWORDS = frozenset(
    "a an the is are was were be been being of to in on at by for with and or as that this these those it its "
    "if then than so such from into your you we our their there here which who whom whose what when where how "
    "do does did can could should would will shall may might must given".split())


@dataclass
class DecontamConfig:
    n: int = field(default=3, metadata={"help": "word n-gram length"})
    threshold: float = field(default=0.4, metadata={"help": "overlap coefficient at or above which a problem is dropped"})
    min_shared: int = field(default=5, metadata={"help": "fewest shared n-grams for a match (guards tiny statements)"})
    boilerplate_frac: float = field(default=0.05, metadata={"help": "n-grams in more than this share of eval problems are ignored"})


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS]


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    if len(w) < n:
        return {tuple(w)} if w else set()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


@dataclass
class Match:
    eval_id: str
    score: float
    shared: int
    eval_file: str


class EvalIndex:
    """An inverted index of eval-problem n-grams."""

    def __init__(self, config: DecontamConfig | None = None):
        self.config = config or DecontamConfig()
        self._grams: dict[str, set] = {}
        self._file: dict[str, str] = {}
        self._index: dict[tuple, list[str]] | None = None

    def add(self, key: str, statement: str, file: str = "") -> None:
        self._grams[key] = ngrams(prompt_statement(statement), self.config.n)
        self._file[key] = file
        self._index = None

    def __len__(self) -> int:
        return len(self._grams)

    def _build(self) -> dict:
        df: Counter = Counter()
        for g in self._grams.values():
            df.update(g)
        limit = max(3, self.config.boilerplate_frac * len(self._grams))
        self.boilerplate = {g for g, c in df.items() if c > limit}
        index: dict[tuple, list[str]] = defaultdict(list)
        for key, grams in self._grams.items():
            grams -= self.boilerplate
            for g in grams:
                index[g].append(key)
        self._index = dict(index)
        return self._index

    def best(self, statement: str) -> Match | None:
        """The eval problem this statement overlaps most, if the overlap reaches the threshold."""
        index = self._index if self._index is not None else self._build()
        grams = ngrams(prompt_statement(statement), self.config.n) - self.boilerplate
        if not grams:
            return None
        shared: Counter = Counter()
        for g in grams:
            for key in index.get(g, ()):
                shared[key] += 1
        best = None
        for key, s in shared.items():
            if s < self.config.min_shared:
                continue
            score = s / max(1, min(len(grams), len(self._grams[key])))
            if score >= self.config.threshold and (best is None or score > best.score):
                best = Match(key, round(score, 3), s, self._file[key])
        return best
