"""The value codec and the assert-test link (codescaler/wire.py), over real pipes to a forked process.

These forked servers run only the trusted lambdas below; candidates are only ever run by the sandbox.
"""

from __future__ import annotations

import math
import os

import pytest

from codescaler import wire


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 2.5, "x", [], [1, [2, "a"]], (1, (2,)), {1: "a", "k": (None, 1.5)},
    float("inf"), float("-inf"), {"__t": [1]},
])
def test_encode_decode_round_trip_keeps_types(value):
    back = wire.decode(wire.encode(value))
    assert back == value and type(back) is type(value)


def test_encode_refuses_what_is_not_plain():
    for bad in (type("I", (int,), {})(3), {1, 2}, b"x", 1j, object()):
        with pytest.raises(wire.NotPlain):
            wire.encode(bad)
    with pytest.raises(ValueError):
        wire.decode({"__s": [1]})  # sets, bytes, complex and handles only on the assert link
    with pytest.raises(ValueError):
        wire.decode({"__h": 1})


def test_pack_keeps_data_and_turns_the_rest_into_handles():
    handles: dict = {}
    odd = type("I", (int,), {})(3)
    packed = wire.pack([{1, 2}, frozenset([3]), b"\x00", 1 + 2j, (odd,), float("nan")], handles)
    assert list(handles.values()) == [odd]
    back = wire.unpack(packed, lambda n: ("handle", n))
    assert back[:4] == [{1, 2}, frozenset([3]), b"\x00", 1 + 2j]
    assert back[4] == (("handle", id(odd)),) and math.isnan(back[5])


@pytest.fixture()
def link():
    """A Link to a forked process serving a small module through `wire.serve`."""
    to_server_r, to_server_w = os.pipe()
    to_tester_r, to_tester_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the serving side: plain functions, a class, an object with a lying __eq__
        os.close(to_server_w), os.close(to_tester_r)

        class Counter:
            def __init__(self, start):
                self.n = start

            def bump(self, by=1):
                self.n += by
                return self.n

        class Overdrawn(ValueError):
            pass

        def withdraw(amount):
            raise Overdrawn(f"cannot take {amount}")

        class Liar:
            def __eq__(self, other):
                return True

            __hash__ = object.__hash__

        env = {"Counter": Counter, "Liar": Liar, "Overdrawn": Overdrawn, "withdraw": withdraw, "LIMIT": 10, "sort_in_place": lambda xs: xs.sort(),
               "fail": lambda: {}["missing"], "leave": lambda: os._exit(3), "gen": lambda n: (i * i for i in range(n))}
        code = 0
        try:
            wire.serve(to_server_r, to_tester_w, env, lambda: (lambda a, b: a + b))
        except BaseException:
            code = 1
        os._exit(code)
    os.close(to_server_r), os.close(to_tester_w)
    yield wire.Link(to_server_w, to_tester_r, 1 << 20)
    os.close(to_server_w), os.close(to_tester_r)
    os.waitpid(pid, 0)


def test_link_calls_data_and_handles(link):
    entry, names = link.ask({"op": "start", "names": ["Counter", "Liar", "LIMIT", "sort_in_place", "fail", "gen",
                                                      "absent"]})
    assert entry(2, 3) == 5 and entry([1], [2]) == [1, 2] and entry((1,), (2,)) == (1, 2)
    assert "absent" not in names and names["LIMIT"] == 10
    c = names["Counter"](5)
    assert isinstance(c, wire.Remote) and c.bump() == 6 and c.bump(by=4) == 10 and c.n == 10
    c.n = 0
    assert c.n == 0
    xs = [3, 1, 2]
    names["sort_in_place"](xs)
    assert xs == [1, 2, 3]  # in-place changes to list/dict/set arguments come back
    liar = names["Liar"]()
    assert not (liar == 1) and liar != 1 and liar == liar  # identity here, never the candidate's __eq__
    assert list(names["gen"](4)) == [0, 1, 4, 9]
    with pytest.raises(KeyError, match="missing"):  # builtin exceptions keep their type
        names["fail"]()
    with pytest.raises(wire.Unsupported):  # the test's own objects cannot cross
        entry(lambda: 0, 1)


def test_link_candidate_classes_in_isinstance_and_raises(link):
    _, names = link.ask({"op": "start", "names": ["Counter", "Liar", "Overdrawn", "withdraw"]})
    c = names["Counter"](1)
    assert isinstance(c, names["Counter"]) and not isinstance(c, names["Liar"]) and not isinstance(3, names["Counter"])
    overdrawn = names["Overdrawn"]  # a stand-in class: a ValueError named Overdrawn
    assert isinstance(overdrawn, type) and issubclass(overdrawn, ValueError) and overdrawn.__name__ == "Overdrawn"
    with pytest.raises(overdrawn, match="cannot take 5"):
        names["withdraw"](5)
    with pytest.raises(ValueError):
        names["withdraw"](6)


def test_link_reports_a_candidate_that_exits(link):
    _, names = link.ask({"op": "start", "names": ["leave"]})
    with pytest.raises(wire.CandidateExited):
        names["leave"]()
    assert not issubclass(wire.CandidateExited, Exception)  # `except Exception` in a test cannot swallow it


def test_stdlib_exception_resolves_only_real_exceptions_of_imported_stdlib_modules():
    import json  # noqa: F401  (imported here, as a test that names json.JSONDecodeError would)
    import sys

    from codescaler.wire import instance_of, stdlib_exception

    assert stdlib_exception("json.decoder", "JSONDecodeError") is json.JSONDecodeError
    assert stdlib_exception("builtins", "SystemExit") is None  # not an Exception: never raised into a test
    assert stdlib_exception("json.decoder", "JSONDecoder") is None  # not an exception class
    assert stdlib_exception("json.decoder", "x.y") is None and stdlib_exception(3, "E") is None
    assert stdlib_exception("codescaler.wire", "CandidateError") is None  # not the standard library
    assert "antigravity" not in sys.modules
    assert stdlib_exception("antigravity", "E") is None and "antigravity" not in sys.modules  # never imported
    e = instance_of(json.JSONDecodeError, "Expecting value")
    assert type(e) is json.JSONDecodeError and str(e) == "Expecting value"
    assert str(instance_of(KeyError, "k")) == "'k'"
