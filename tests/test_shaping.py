import math

import pytest

from codescaler.shaping import shape, softplus

TABLE = [
    # (rm_score, has_code, mode, expected reward)
    (0.0, True, "softplus", math.log(2.0)),
    (6.5424089431762695, True, "softplus", math.log1p(math.exp(6.5424089431762695))),
    (-0.0312652587890625, True, "softplus", math.log1p(math.exp(-0.0312652587890625))),
    (-30.0, True, "softplus", math.log1p(math.exp(-30.0))),
    (1000.0, True, "softplus", 1000.0),  # no overflow
    (-1000.0, True, "softplus", 0.0),
    (5.0, False, "softplus", 0.0),  # no code: 0 whatever the RM says
    (None, False, "softplus", 0.0),
    (-3.0, True, "none", -3.0),
    (2.5, False, "none", 0.0),
]


@pytest.mark.parametrize("score,has_code,mode,expected", TABLE)
def test_shaping_table(score, has_code, mode, expected):
    assert shape(score, has_code, mode) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_any_valid_code_outranks_no_code():
    for s in (-50.0, -5.0, -0.1, 0.0, 3.0):
        assert shape(s, True) > shape(s, False) == 0.0


def test_softplus_is_monotone_and_positive():
    xs = [-20 + i * 0.5 for i in range(80)]
    ys = [softplus(x) for x in xs]
    assert all(y > 0 for y in ys) and ys == sorted(ys)


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown shaping"):
        shape(1.0, True, "sigmoid")
