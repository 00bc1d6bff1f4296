"""What crosses process boundaries around a sandboxed run (stdlib only; also loaded inside the sandbox).

* `encode` / `decode`: plain JSON-able values with exact builtin types (call
  tests' arguments and return values).
* Length-prefixed JSON frames (`send_frame`, `recv_frame`).
* The assert-test link. An assert test runs in a *tester* process that holds
  only trusted code (the problem's statement and its test); the candidate runs
  in another process. The test reaches the candidate only through `Remote`
  proxies: each call, attribute read or item read is a request answered by
  `serve` in the candidate's process, and what comes back is a fresh copy of
  plain data (`pack` / `unpack`) or an opaque handle to an object that stays
  in the candidate's process. So no candidate code ever runs in the tester: an
  object with a forged __eq__, an int subclass or a patched module cannot
  reach the comparison, and the tester's report channel is out of the
  candidate's reach (see codescaler/harness.py).
"""

from __future__ import annotations

import builtins
import fcntl
import json
import math
import os
import socket
import struct
import sys

MAX_FRAME = 1 << 30
PLAIN_SCALARS = (type(None), bool, int, float, str)
MAX_DEPTH = 200
BIG_INT_BITS = 10_000  # ~3,000 decimal digits: larger ints travel as hex


# ---------------------------------------------------------------- call tests: plain JSON values


class NotPlain(TypeError):
    """A value that is not made of plain builtin types."""


def encode(value):
    """A JSON-able form of a plain value; exact types only, so subclasses are refused.

    Lists are JSON lists; tuples, dicts and non-finite floats become one-key
    tagged objects, so `decode(encode(v)) == v` with the same types.
    """
    return tagged(value, _not_plain, wide=False)


def _not_plain(value):
    t = type(value)
    raise NotPlain(f"returned {t.__module__}.{t.__qualname__}, not a plain builtin type")


def decode(obj):
    """Inverse of `encode`; raises ValueError on anything `encode` cannot produce."""
    return unpack(obj, None)


# ---------------------------------------------------------------- assert tests: data and handles


def tagged(value, leaf, wide: bool = True, depth: int = 0):
    """The JSON-able form of plain data, with `leaf(x)` for anything else: exact builtin scalars, lists, and
    tuples, dicts and non-finite floats as one-key tagged objects; with `wide`, sets, bytes and complex too."""
    t = type(value)
    if t is float and not math.isfinite(value):
        return {"__f": repr(value)}
    if t is int and value.bit_length() > BIG_INT_BITS:  # decimal text of > 4300 digits is refused (CPython's
        return {"__i": hex(value)}                      # int_max_str_digits); hex is exempt and linear
    if t in PLAIN_SCALARS:
        return value
    if depth > MAX_DEPTH:
        raise NotPlain("value nested too deeply")
    if t is list:
        return [tagged(v, leaf, wide, depth + 1) for v in value]
    if t is tuple or (wide and t in (set, frozenset)):
        tag = {tuple: "__t", set: "__s", frozenset: "__z"}[t]
        return {tag: [tagged(v, leaf, wide, depth + 1) for v in value]}
    if t is dict:
        return {"__d": [[tagged(k, leaf, wide, depth + 1), tagged(v, leaf, wide, depth + 1)] for k, v in value.items()]}
    if wide and t is bytes:
        return {"__b": value.hex()}
    if wide and t is complex:
        return {"__c": [repr(value.real), repr(value.imag)]}
    return leaf(value)


def pack(value, handles: dict):
    """`tagged` for assert tests, in the candidate's process: any other object (a subclass of a builtin
    included) becomes a handle {"__h": n} kept in `handles`; an exception class, a stand-in {"__x": ...}."""

    def keep(obj):
        handles[id(obj)] = obj  # keeps it alive while the tester may still refer to it
        if isinstance(obj, type) and issubclass(obj, BaseException):  # the tester makes a stand-in class
            return {"__x": [id(obj), obj.__name__[:100], builtin_base(obj)]}
        return {"__h": id(obj)}

    return tagged(value, keep)


def builtin_base(cls: type) -> str:
    """The nearest builtin exception class of `cls` (e.g. ValueError for a `class Overdrawn(ValueError)`)."""
    return next(c.__name__ for c in cls.__mro__ if c.__module__ == "builtins")


def unpack(obj, resolve):
    """Inverse of `pack`: fresh builtins; handles go through `resolve(n)` (None: refuse handles)."""
    t = type(obj)
    if t in PLAIN_SCALARS:
        return obj
    if t is list:
        return [unpack(v, resolve) for v in obj]
    if t is dict and len(obj) == 1:
        (tag, inner), = obj.items()
        if tag == "__f" and inner in ("inf", "-inf", "nan"):
            return float(inner)
        if tag == "__i" and type(inner) is str:
            return int(inner, 16)
        if tag == "__h" and type(inner) is int and resolve is not None:
            return resolve(inner)
        if tag == "__x" and resolve is not None and type(inner) is list and len(inner) == 3 and type(inner[0]) is int:
            return resolve(inner[0], inner[1:])
        if tag == "__b" and type(inner) is str and resolve is not None:
            return bytes.fromhex(inner)
        if tag == "__c" and resolve is not None and type(inner) is list and len(inner) == 2 and all(type(x) is str for x in inner):
            return complex(float(inner[0]), float(inner[1]))
        if type(inner) is list:
            items = [unpack(v, resolve) for v in inner]
            if tag == "__t":
                return tuple(items)
            if tag == "__s" and resolve is not None:
                return set(items)
            if tag == "__z" and resolve is not None:
                return frozenset(items)
            if tag == "__d" and all(type(p) is list and len(p) == 2 for p in items):
                return {k: v for k, v in items}
    raise ValueError(f"not an encoded plain value: {str(obj)[:80]}")


# ---------------------------------------------------------------- framing


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def frame(obj) -> bytes:
    """`obj` as JSON behind its 4-byte big-endian length: what every frame looks like on the wire."""
    data = json.dumps(obj).encode()
    return struct.pack("!I", len(data)) + data


def send_frame(fd: int, obj) -> None:
    write_all(fd, frame(obj))


def _exact(read, n: int) -> bytes | None:
    """n bytes from `read(k)`, or None at end of stream."""
    chunks, got = [], 0
    while got < n:
        chunk = read(min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(fd: int, limit: int = MAX_FRAME):
    """The next frame's object, or None at end of stream; ValueError when over `limit` or not JSON."""
    return _recv(lambda k: os.read(fd, k), limit)


def recv_frame_sock(sock, limit: int):
    """`recv_frame` for a socket with a timeout (socket.timeout is an OSError)."""
    return _recv(sock.recv, limit)


def _recv(read, limit: int):
    head = _exact(read, 4)
    if head is None:
        return None
    (n,) = struct.unpack("!I", head)
    if n > limit:
        raise ValueError(f"frame of {n} bytes is over the limit")
    body = _exact(read, n)
    return None if body is None else json.loads(body)


def try_send(fd: int, obj) -> None:
    """`send_frame`, ignoring a reader that is gone."""
    try:
        send_frame(fd, obj)
    except (OSError, ValueError, TypeError):
        pass


def send_frame_fds(sock: socket.socket, obj, fds: list[int]) -> None:
    """A frame with open fds attached (SCM_RIGHTS on its first bytes): the receiver gets its own copies."""
    data = frame(obj)
    sent = socket.send_fds(sock, [data], fds)
    sock.sendall(data[sent:])


def recv_frame_fds(sock: socket.socket, max_fds: int) -> tuple[object, list[int]]:
    """(the frame's object, the fds that came with it), or (None, []) at end of stream."""
    head, fds, _, _ = socket.recv_fds(sock, 4, max_fds)
    rest = _exact(sock.recv, 4 - len(head)) if head else None
    if rest is None:
        for fd in fds:
            os.close(fd)
        return None, []
    (n,) = struct.unpack("!I", head + rest)
    body = _exact(sock.recv, n)
    return (None if body is None else json.loads(body)), fds


def parse_frames(buf: bytearray, results: list) -> None:
    """Move the complete frames at the start of `buf` into `results` ({"garbled": True} for non-JSON)."""
    while len(buf) >= 4:
        (n,) = struct.unpack("!I", buf[:4])
        if len(buf) < 4 + n:
            return
        try:
            results.append(json.loads(bytes(buf[4:4 + n])))
        except (ValueError, RecursionError):  # a candidate's frame nested 100,000 deep must not end the harness
            results.append({"garbled": True})
        del buf[:4 + n]


# ---------------------------------------------------------------- fds and streams of forked processes


def place_fds(fds: list[int]) -> None:
    """Make fds[i] fd number i, and close every other fd of this process."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in fds]  # out of the way of the targets first
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(len(fds), 1 << 16)


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, MemoryError):
            pass


# ---------------------------------------------------------------- the candidate's side of the link


def serve(fd_in: int, fd_out: int, env: dict, entry) -> None:
    """Answer the tester's requests until it closes the link (runs in the candidate's process)."""
    handles: dict = {}

    def resolve(n):
        if n not in handles:
            raise ValueError("unknown handle")
        return handles[n]

    while True:
        req = recv_frame(fd_in)
        if req is None:
            return
        try:
            value, mut = _apply(req, env, entry, resolve)
            reply = {"v": pack(value, handles)}
            if mut:
                reply["mut"] = [[i, pack(a, handles)] for i, a in mut]
        except (SystemExit, KeyboardInterrupt) as e:
            reply = {"exit": type(e).__name__}
            send_frame(fd_out, reply)
            raise
        except MemoryError:
            raise
        except BaseException as e:  # the candidate's own error, given to the test as an exception
            reply = {"exc": [type(e).__name__, str(e)[:300]]}
            if type(e).__module__ != "builtins":  # raised as the same stand-in class the test may hold
                reply["cls"] = pack(type(e), handles)
                reply["std"] = [str(type(e).__module__)[:100], str(type(e).__qualname__)[:100]]
        send_frame(fd_out, reply)


def _apply(req: dict, env: dict, entry, resolve):
    op = req.get("op")
    if op == "start":  # the entry point, then the other names the test uses that the candidate's module defines
        return [entry(), {n: env[n] for n in req["names"] if n in env}], None
    target = resolve(req["h"])
    if op == "call":
        args = [unpack(a, resolve) for a in req["args"]]
        kwargs = {k: unpack(v, resolve) for k, v in req["kw"].items()}
        value = target(*args, **kwargs)
        return value, [(i, a) for i, a in enumerate(args) if type(a) in (list, dict, set)]
    if op == "getattr":
        return getattr(target, req["name"]), None
    if op == "setattr":
        setattr(target, req["name"], unpack(req["value"], resolve))
        return None, None
    if op == "getitem":
        return target[unpack(req["key"], resolve)], None
    if op == "setitem":
        target[unpack(req["key"], resolve)] = unpack(req["value"], resolve)
        return None, None
    if op == "contains":
        return unpack(req["value"], resolve) in target, None
    if op == "isinstance":
        return isinstance(unpack(req["value"], resolve), target), None
    if op in UNARY:
        return UNARY[op](target), None
    raise ValueError(f"unknown request {op!r}")


UNARY = {"len": len, "list": list, "next": next, "bool": bool, "str": str, "repr": repr}


# ---------------------------------------------------------------- the tester's side of the link


class CandidateExited(BaseException):
    """The candidate exited or died during the test (a BaseException: `except Exception` in a test cannot swallow it)."""


class Unsupported(BaseException):
    """The test hands the candidate something that cannot cross the link (a function, an object of the test's own)."""


class OverLimit(BaseException):
    """The candidate sent back more than the run's output limit."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one."""


class Link:
    """The tester's end: sends requests, turns replies into plain data, `Remote` handles and exceptions."""

    def __init__(self, fd_out: int, fd_in: int, limit: int):
        self.fd_out, self.fd_in, self.limit = fd_out, fd_in, limit
        self.remotes: dict = {}

    def ask(self, req: dict, originals: list | None = None):
        try:
            send_frame(self.fd_out, req)
            reply = recv_frame(self.fd_in, self.limit)
        except OSError:
            reply = None
        except ValueError as e:  # over the limit, or not a frame at all
            if "over the limit" in str(e):
                raise OverLimit(str(e)) from None
            raise
        if reply is None:
            raise CandidateExited("the candidate's process exited during the test")
        if "exit" in reply:
            raise CandidateExited(f"the candidate raised {reply['exit']} during the test")
        if "exc" in reply:
            name, msg = reply["exc"]
            real = stdlib_exception(*reply["std"]) if "std" in reply else None
            if real is not None:
                raise instance_of(real, msg)
            if "cls" in reply:
                stand_in = self.unpack(reply["cls"])
                if isinstance(stand_in, type) and issubclass(stand_in, BaseException):
                    raise stand_in(msg)
            exc = getattr(builtins, name, None)
            if isinstance(exc, type) and issubclass(exc, Exception):
                raise exc(msg)
            raise CandidateError(f"{name}: {msg}")
        for i, new in reply.get("mut", ()):
            _update_in_place(originals[i], self.unpack(new))
        return self.unpack(reply["v"])

    def unpack(self, obj):
        return unpack(obj, self.remote)

    def remote(self, n: int, exception: list | None = None):
        """The tester's object for handle n: a `Remote`, or for an exception class of the candidate's a
        stand-in class (same name, same nearest builtin base) so that `pytest.raises(Overdrawn)` and
        `except Overdrawn` work in the test."""
        if n not in self.remotes:
            if exception is None:
                self.remotes[n] = Remote(self, n)
            else:
                name, base = str(exception[0]), getattr(builtins, str(exception[1]), None)
                if not (isinstance(base, type) and issubclass(base, Exception)):
                    base = CandidateError
                self.remotes[n] = type(name, (base,), {"__module__": "solution", "_candidate_handle": n})
        return self.remotes[n]

    def pack(self, value):
        """A value the test sends: plain data, or a handle or stand-in class it got from the candidate."""
        return tagged(value, _handle_of)


def stdlib_exception(module, name) -> type | None:
    """The real class of a standard-library exception the candidate raised (json.JSONDecodeError, say), so that
    `pytest.raises` and `except` in the test match it; only from a module the tester has imported itself
    (a name from the candidate never makes the tester import anything) and never through a module __getattr__."""
    if not (isinstance(module, str) and isinstance(name, str) and name.isidentifier()):
        return None
    if module.partition(".")[0] not in sys.stdlib_module_names or module not in sys.modules:
        return None
    cls = vars(sys.modules[module]).get(name)
    return cls if isinstance(cls, type) and issubclass(cls, Exception) else None


def instance_of(cls: type, msg: str) -> BaseException:
    """cls(msg), or for classes whose constructor wants more (JSONDecodeError(msg, doc, pos)) one with args (msg,)."""
    try:
        return cls(msg)
    except Exception:  # any constructor error: build the instance without calling __init__
        exc = cls.__new__(cls)
        exc.args = (msg,)
        return exc


def _handle_of(value):
    if type(value) is Remote:
        return {"__h": object.__getattribute__(value, "_n")}
    if isinstance(value, type) and isinstance(value.__dict__.get("_candidate_handle"), int):
        return {"__h": value.__dict__["_candidate_handle"]}
    return _refuse(value)


def _refuse(value):
    t = type(value)
    raise Unsupported(f"the test passes a {t.__module__}.{t.__qualname__} to the candidate; only plain data "
                      "and the candidate's own objects can cross to its process")


def _update_in_place(arg, new) -> None:
    """Mirror the candidate's in-place change of a list/dict/set argument into the test's object."""
    if type(arg) is not type(new):
        return
    if type(arg) is list:
        arg[:] = new
    else:
        arg.clear()
        arg.update(new)


class Remote:
    """An object that lives in the candidate's process. Equality and hashing are by identity here:
    the candidate's __eq__ never decides a comparison in the test."""

    __slots__ = ("_link", "_n")

    def __init__(self, link: Link, n: int):
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_n", n)

    def _ask(self, op: str, originals: list | None = None, **req):
        link = object.__getattribute__(self, "_link")
        return link.ask({"op": op, "h": object.__getattribute__(self, "_n"), **req}, originals)

    def __call__(self, *args, **kwargs):
        link = object.__getattribute__(self, "_link")
        args = list(args)
        return self._ask("call", args, args=[link.pack(a) for a in args],
                         kw={str(k): link.pack(v) for k, v in kwargs.items()})

    def __getattr__(self, name):
        return self._ask("getattr", name=name)

    def __setattr__(self, name, value):
        self._ask("setattr", name=name, value=object.__getattribute__(self, "_link").pack(value))

    def __getitem__(self, key):
        return self._ask("getitem", key=object.__getattribute__(self, "_link").pack(key))

    def __setitem__(self, key, value):
        link = object.__getattribute__(self, "_link")
        self._ask("setitem", key=link.pack(key), value=link.pack(value))

    def __contains__(self, value):
        return self._ask("contains", value=object.__getattribute__(self, "_link").pack(value)) is True

    def __len__(self):
        n = self._ask("len")
        if type(n) is not int:
            raise TypeError("len() of the candidate's object is not an int")
        return n

    def __iter__(self):
        return iter(self._ask("list"))

    def __next__(self):
        try:
            return self._ask("next")
        except StopIteration:
            raise StopIteration from None

    def __bool__(self):
        return self._ask("bool") is True

    def __instancecheck__(self, instance):  # isinstance(x, SomeCandidateClass)
        return self._ask("isinstance", value=object.__getattribute__(self, "_link").pack(instance)) is True

    def __str__(self):
        s = self._ask("str")
        return s if type(s) is str else "<candidate object>"

    def __repr__(self):
        s = self._ask("repr")
        return s if type(s) is str else "<candidate object>"
