"""Safe, bounded-memory decoding of test blobs.

LiveCodeBench stores private tests as base64(zlib(pickle(json_text))). Its own
loader calls `pickle.loads` on downloaded bytes, which runs arbitrary code. Here:

- `safe_unpickle` is a small pickle *interpreter* of our own. It never imports
  anything and never calls anything: it accepts only the opcodes that build
  plain `str`, `list` and `dict` values (plus protocol/framing/memo
  book-keeping) and refuses every other opcode (GLOBAL, REDUCE, BUILD, INST,
  ints, bytes, ...) with `UnsafePickleError` naming the opcode and its offset.
  A memo reference may only repeat a string, so shared or cyclic containers
  (which no JSON value produces) are refused too.
- `lcb_blob_stream` decodes base64 and zlib in chunks into a spooled
  temporary file (memory above 32 MiB goes to disk), so a blob of hundreds of
  MB never sits in memory more than once; a top-level pickled string is
  handed back as a text stream over that file instead of a `str`.
- `JsonStream` parses JSON incrementally from any text source, so that test
  lists can be walked one case at a time and only the kept cases are held.
"""

from __future__ import annotations

import binascii
import codecs
import json
import struct
import tempfile
import zlib
from typing import Callable, Iterator

CHUNK = 1 << 20
SPOOL_BYTES = 32 << 20
DEFAULT_MAX_DECODED_BYTES = 8 << 30
REPEAT_FLOOR = 64 << 20  # bytes that memo repeats may add to a pickle's value whatever its size


class UnsafePickleError(ValueError):
    """A pickle that does something other than build plain str/list/dict values."""


class BlobError(ValueError):
    """A test blob that is not valid base64/zlib/pickle/JSON."""


# ---------------------------------------------------------------- restricted pickle


class _Slice:
    """A large string left in the file: (offset, byte length), read only when needed."""

    __slots__ = ("offset", "length")

    def __init__(self, offset: int, length: int):
        self.offset, self.length = offset, length


_MARK = object()
_STRING_OPS = {0x8C: ("SHORT_BINUNICODE", "<B"), 0x58: ("BINUNICODE", "<I"), 0x8D: ("BINUNICODE8", "<Q")}
_PUT_OPS = {0x71: ("BINPUT", "<B"), 0x72: ("LONG_BINPUT", "<I")}
_GET_OPS = {0x68: ("BINGET", "<B"), 0x6A: ("LONG_BINGET", "<I")}
_REFUSED_NAMES = {
    0x63: "GLOBAL", 0x93: "STACK_GLOBAL", 0x52: "REDUCE", 0x62: "BUILD", 0x69: "INST", 0x6F: "OBJ",
    0x81: "NEWOBJ", 0x92: "NEWOBJ_EX", 0x82: "EXT1", 0x83: "EXT2", 0x84: "EXT4", 0x50: "PERSID",
    0x51: "BINPERSID", 0x4A: "BININT", 0x4B: "BININT1", 0x4D: "BININT2", 0x49: "INT", 0x4C: "LONG",
    0x8A: "LONG1", 0x8B: "LONG4", 0x47: "BINFLOAT", 0x46: "FLOAT", 0x4E: "NONE", 0x88: "NEWTRUE",
    0x89: "NEWFALSE", 0x53: "STRING", 0x54: "BINSTRING", 0x55: "SHORT_BINSTRING", 0x42: "BINBYTES",
    0x43: "SHORT_BINBYTES", 0x8E: "BINBYTES8", 0x96: "BYTEARRAY8", 0x97: "NEXT_BUFFER",
    0x98: "READONLY_BUFFER", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3", 0x74: "TUPLE",
    0x29: "EMPTY_TUPLE", 0x8F: "EMPTY_SET", 0x90: "ADDITEMS", 0x91: "FROZENSET", 0x30: "POP",
    0x31: "POP_MARK", 0x32: "DUP",
}


def safe_unpickle(f, stream_strings_over: int | None = None):
    """Interpret the pickle in binary file `f` (seekable) with only str/list/dict opcodes.

    With `stream_strings_over`, a *top-level* string longer than that many
    bytes is returned as a text stream reader (`read(n) -> str`) over the
    file instead of a `str`; anywhere else it is read normally.
    """
    stack: list = []
    memo: dict[int, object] = {}
    here = f.tell()
    size = f.seek(0, 2) - here
    f.seek(here)
    # a memo GET repeats a string without its bytes: 2000 GETs of one 500 KB string are 1 GB once json-encoded,
    # from a blob of under 1 KB. Repeats may add at most the pickle's own size (or 64 MiB) to the value.
    repeat_budget = max(REPEAT_FLOOR, size)

    def take(n: int) -> bytes:
        b = f.read(n)
        if len(b) != n:
            raise BlobError("pickle ends early")
        return b

    def real(x):
        if isinstance(x, _Slice):
            here = f.tell()
            f.seek(x.offset)
            s = _utf8(take(x.length))
            f.seek(here)
            return s
        return x

    def pop_mark() -> list:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1:]
                del stack[i:]
                return [real(x) for x in items]
        raise BlobError("pickle MARK missing")

    def target(kind: type):
        if not stack or not isinstance(stack[-1], kind):
            raise UnsafePickleError(f"pickle adds items to a {type(stack[-1]).__name__ if stack else 'nothing'}, "
                                    f"not a {kind.__name__}")
        return stack[-1]

    while True:
        at = f.tell()
        b = f.read(1)
        if not b:
            raise BlobError("pickle ends without STOP")
        op = b[0]
        if op == 0x80:  # PROTO
            take(1)
        elif op == 0x95:  # FRAME: a prefetch hint, the bytes follow contiguously
            take(8)
        elif op == 0x2E:  # STOP
            if len(stack) != 1 or stack[0] is _MARK:
                raise BlobError("pickle stack is malformed at STOP")
            result = stack[0]
            if isinstance(result, _Slice):
                return _SliceReader(f, result)
            return result
        elif op == 0x28:  # MARK
            stack.append(_MARK)
        elif op == 0x5D:  # EMPTY_LIST
            stack.append([])
        elif op == 0x7D:  # EMPTY_DICT
            stack.append({})
        elif op == 0x6C:  # LIST
            stack.append(pop_mark())
        elif op == 0x64:  # DICT
            items = pop_mark()
            stack.append(_pairs_to_dict(items))
        elif op == 0x61:  # APPEND
            if len(stack) < 2:
                raise BlobError("pickle APPEND on an empty stack")
            v = real(stack.pop())
            target(list).append(v)
        elif op == 0x65:  # APPENDS
            items = pop_mark()
            target(list).extend(items)
        elif op == 0x73:  # SETITEM
            if len(stack) < 3:
                raise BlobError("pickle SETITEM on a short stack")
            v, k = real(stack.pop()), real(stack.pop())
            target(dict).update(_pairs_to_dict([k, v]))
        elif op == 0x75:  # SETITEMS
            items = pop_mark()
            target(dict).update(_pairs_to_dict(items))
        elif op in _STRING_OPS:
            _, fmt = _STRING_OPS[op]
            (n,) = struct.unpack(fmt, take(struct.calcsize(fmt)))
            if stream_strings_over is not None and n > stream_strings_over:
                stack.append(_Slice(f.tell(), n))
                f.seek(n, 1)
            else:
                stack.append(_utf8(take(n)))
        elif op == 0x56:  # UNICODE (protocol 0): raw-unicode-escape text up to a newline
            stack.append(f.readline()[:-1].decode("raw-unicode-escape"))
        elif op == 0x94:  # MEMOIZE
            if not stack:
                raise BlobError("pickle MEMOIZE on an empty stack")
            memo[len(memo)] = stack[-1]
        elif op in _PUT_OPS or op == 0x70:  # BINPUT, LONG_BINPUT, PUT
            if not stack:
                raise BlobError("pickle PUT on an empty stack")
            memo[_memo_key(op, f, take)] = stack[-1]
        elif op in _GET_OPS or op == 0x67:  # BINGET, LONG_BINGET, GET
            key = _memo_key(op, f, take)
            if key not in memo:
                raise BlobError(f"pickle refers to memo {key} that was never stored")
            v = memo[key]
            if not isinstance(v, (str, _Slice)):
                raise UnsafePickleError(f"pickle repeats a {type(v).__name__} (shared or cyclic containers are "
                                        f"refused) at byte {at}")
            repeat_budget -= v.length if isinstance(v, _Slice) else len(v)
            if repeat_budget < 0:
                raise BlobError(f"pickle repeats strings beyond {max(REPEAT_FLOOR, size)} bytes (a memo bomb) "
                                f"at byte {at}")
            stack.append(real(v))
        else:
            name = _REFUSED_NAMES.get(op, f"0x{op:02x}")
            raise UnsafePickleError(f"refusing pickle opcode {name} at byte {at}: only plain str, list and dict "
                                    "values are allowed (nothing is imported or called)")


def _memo_key(op: int, f, take) -> int:
    if op in (0x70, 0x67):  # PUT / GET carry a decimal line
        line = f.readline()
        try:
            return int(line)
        except ValueError:
            raise BlobError("pickle memo index is not a number") from None
    fmt = (_PUT_OPS.get(op) or _GET_OPS[op])[1]
    return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]


def _pairs_to_dict(items: list) -> dict:
    if len(items) % 2:
        raise BlobError("pickle dict has an odd number of items")
    out = {}
    for k, v in zip(items[::2], items[1::2]):
        if not isinstance(k, str):
            raise UnsafePickleError(f"pickle dict key is a {type(k).__name__}; only str keys are allowed")
        out[k] = v
    return out


def _utf8(b: bytes) -> str:
    try:
        return b.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as e:
        raise BlobError(f"pickled string is not UTF-8 ({e.reason})") from None


class _SliceReader:
    """`read(n) -> str` over a UTF-8 byte range of a file, decoded incrementally."""

    def __init__(self, f, s: _Slice):
        self.f, self.left = f, s.length
        self.f.seek(s.offset)
        self.dec = codecs.getincrementaldecoder("utf-8")("surrogatepass")

    def read(self, n: int = CHUNK) -> str:
        if self.left <= 0:
            return ""
        b = self.f.read(min(n, self.left))
        self.left -= len(b)
        if not b:
            raise BlobError("pickle ends inside a string")
        try:
            return self.dec.decode(b, final=self.left == 0)
        except UnicodeDecodeError as e:
            raise BlobError(f"pickled string is not UTF-8 ({e.reason})") from None


# ---------------------------------------------------------------- base64 + zlib


def decode_b64_zlib(blob: str, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES):
    """base64 text -> zlib-inflated bytes, in chunks, into a spooled temporary file (rewound)."""
    if any(c.isspace() for c in blob[:256]) or any(c.isspace() for c in blob[-256:]):
        blob = "".join(blob.split())
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    inflate = zlib.decompressobj()
    total = 0
    step = 4 * (CHUNK // 4)
    try:
        for i in range(0, len(blob), step):
            try:
                raw = binascii.a2b_base64(blob[i:i + step].encode("ascii"), strict_mode=True)
            except (binascii.Error, UnicodeEncodeError) as e:
                raise BlobError(f"not valid base64 ({e})") from None
            data = inflate.decompress(raw, CHUNK)  # bounded output per call: a zip bomb cannot balloon
            while True:
                total += len(data)
                if total > max_decoded_bytes:
                    raise BlobError(f"inflates to more than {max_decoded_bytes} bytes (raise --max-blob-mb)")
                out.write(data)
                if not inflate.unconsumed_tail:
                    break
                data = inflate.decompress(inflate.unconsumed_tail, CHUNK)
        out.write(inflate.flush())
        if not inflate.eof:
            raise BlobError("zlib stream is truncated")
    except zlib.error as e:
        out.close()
        raise BlobError(f"not valid zlib data ({e})") from None
    except BlobError:
        out.close()
        raise
    out.seek(0)
    return out


def lcb_blob_stream(blob: str, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES):
    """A `JsonStream` over a LiveCodeBench test field: plain JSON, or base64 -> zlib -> safe pickle -> JSON.

    The caller closes the stream (`.close()`) when done; that removes the temporary file.
    """
    head = blob.lstrip()[:1]
    if head in ("[", "{"):
        return JsonStream(_str_reader(blob))
    f = decode_b64_zlib(blob, max_decoded_bytes)
    try:
        obj = safe_unpickle(f, stream_strings_over=CHUNK)
    except (UnsafePickleError, BlobError):
        f.close()
        raise
    if isinstance(obj, _SliceReader):
        return JsonStream(obj.read, on_close=f.close)
    f.close()
    if isinstance(obj, str):
        return JsonStream(_str_reader(obj))
    return JsonStream(_str_reader(json.dumps(obj)))


def decode_lcb_tests(blob: str, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> list:
    """The whole decoded test list of a LiveCodeBench test field (no streaming; for small blobs)."""
    js = lcb_blob_stream(blob, max_decoded_bytes)
    try:
        return js.value()
    finally:
        js.close()


# ---------------------------------------------------------------- streaming JSON


def _str_reader(text: str) -> Callable[[int], str]:
    pos = 0

    def read(n: int = CHUNK) -> str:
        nonlocal pos
        chunk = text[pos:pos + n]
        pos += len(chunk)
        return chunk

    return read


class JsonStream:
    """Incremental JSON reader over `read(n) -> str`: values, arrays and objects one piece at a time.

    Only the value being parsed sits in the buffer; a failed parse grows the
    buffer geometrically, so the work stays linear in the input size.
    """

    _WS = " \t\r\n"

    def __init__(self, read: Callable[[int], str], chunk: int = CHUNK, on_close: Callable[[], None] | None = None):
        self._read, self._chunk, self._on_close = read, chunk, on_close
        self.buf, self.pos, self.eof = "", 0, False
        self._dec = json.JSONDecoder()

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
            self._on_close = None

    def _fill(self) -> bool:
        if self.eof:
            return False
        want = max(self._chunk, len(self.buf) - self.pos)
        new = self._read(want)
        if not new:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + new
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-whitespace character ('' at the end), not consumed."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in self._WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def expect(self, ch: str) -> None:
        got = self.peek()
        if got != ch:
            raise BlobError(f"JSON: expected {ch!r}, found {got or 'end of input'!r}")
        self.pos += 1

    def value(self):
        """Parse and return the next complete JSON value."""
        self.peek()
        while True:
            try:
                obj, end = self._dec.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if self._fill():
                    continue
                raise BlobError(f"not valid JSON ({e.msg})") from None
            if end == len(self.buf) and not isinstance(obj, (str, list, dict)) and self._fill():
                continue  # a number or literal may continue in the next chunk
            self.pos = end
            return obj

    def skip(self) -> None:
        self.value()

    def iter_array(self) -> Iterator:
        """Yield each element of the array that comes next."""
        self.expect("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield self.value()
            c = self.peek()
            self.pos += 1
            if c == "]":
                return
            if c != ",":
                raise BlobError(f"JSON: expected ',' or ']' in an array, found {c or 'end of input'!r}")

    def iter_object(self) -> Iterator[str]:
        """Yield each key of the object that comes next; the caller must consume its value."""
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise BlobError("JSON: object key is not a string")
            self.expect(":")
            yield key
            c = self.peek()
            self.pos += 1
            if c == "}":
                return
            if c != ",":
                raise BlobError(f"JSON: expected ',' or '}}' in an object, found {c or 'end of input'!r}")
