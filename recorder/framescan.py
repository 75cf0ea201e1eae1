"""Compiled decode of compact combined-stream frames into columns: the fast path of `frames_table`.

A numba kernel (`scan`) walks the frames of one (table, symbol) as one byte buffer and fills typed
arrays: integers, decimal strings as int64 units of 1e-8 (the dataset's decimal128(38, 8) unscaled
value, so no float and no string cast), booleans, string positions, and for depth the levels already
exploded in the dataset's row order (bids then asks of each message, one null row for a message without
levels). It releases the GIL, so the segment writer runs beside the receiving thread.

It reads only the layout Binance sends: `{"stream":"<name>","data":{<event>}}` with no whitespace,
strings without escapes or non-ASCII bytes, integers in int64, decimal strings of at most 10 whole and 8
fractional digits, levels of exactly two strings, bids before asks. Anything else in any frame (and a
missing required field, a duplicate key, an event type or symbol other than the group's) makes it
return the frame's index, and the group takes the Arrow reader (`recorder.columnar`), which stays the
reference: the tests check that both give identical tables on the real captures of every market and on
generated frames.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# value kinds of a field
INT, DEC, BOOL, STR, LEVELS = 0, 1, 2, 3, 4
EVENT_SLOT, SYMBOL_SLOT = 0, 1  # `keys` start with e and s, checked against the group's event and symbol
# frame outcomes
OK = -1
# The frames of one (table, symbol) lie scattered through a segment's batches, between the other streams'
# frames: reading them in turn waits on memory at every frame. Asking for the frame this many ahead
# (its first bytes: a whole ticker or trade) halves the time of a bookTicker group (measured 2026-12-03:
# 27 -> 15 ms for 73k frames; depth, whose frames are long runs the hardware prefetches, -5 %).
PREFETCH_AHEAD = 8
PREFETCH_BYTES = 256
_CACHE_LINE = 64
UNIT_DIGITS = 8  # 1e-8: the dataset's decimal scale (schemas.tables.DECIMAL)
_MAX_WHOLE_DIGITS = 10  # 9,999,999,999.99999999 in 1e-8 units fits int64
_MAX_UNKNOWN = 8  # keys outside the table remembered per frame, to refuse duplicates among them
ENVELOPE = np.frombuffer(b'{"stream":"', np.uint8)
_DATA = np.frombuffer(b',"data":{', np.uint8)
_QUOTE, _COMMA, _COLON, _LBRACKET, _RBRACKET, _LBRACE, _RBRACE = 34, 44, 58, 91, 93, 123, 125
_MINUS, _DOT, _ZERO, _NINE, _BACKSLASH = 45, 46, 48, 57, 92


@intrinsic
def _prefetch(typingctx, array, index):
    """A hint that `array[index]` will be read soon (llvm.prefetch: read, low locality, data cache).
    Never faults and changes no result."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]))
        address = builder.bitcast(builder.gep(data, [args[1]]), byte_pointer)
        builder.call(prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 1), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(array, index), codegen


@intrinsic
def _load8(typingctx, array, index):
    """The 8 bytes array[index:index + 8] as one little-endian integer (an unaligned load; the caller
    keeps index + 8 within the array)."""
    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        word = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(word, align=1)
    return types.uint64(array, index), codegen


@intrinsic
def _trailing_zeros(typingctx, word):
    """Count of trailing zero bits of a uint64 (64 for 0): llvm.cttz."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        flag = ir.IntType(1)
        cttz = builder.module.declare_intrinsic("llvm.cttz", [i64], ir.FunctionType(i64, [i64, flag]))
        return builder.call(cttz, [args[0], ir.Constant(flag, 0)])
    return types.uint64(word), codegen


_ASCII_ZEROS = np.uint64(0x3030303030303030)
_ABOVE_NINE = np.uint64(0x4646464646464646)  # added to a byte: its top bit is set iff the byte is above '9'
_TOP_BITS = np.uint64(0x8080808080808080)
_ONES = np.uint64(0x0101010101010101)
_QUOTES = np.uint64(0x2222222222222222)
_BACKSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_SPACES = np.uint64(0x2020202020202020)
_LOW_BYTES = np.uint64(0x000000FF000000FF)
_MUL_HUNDRED_MILLION = np.uint64(100 + (1000000 << 32))
_MUL_TEN_THOUSAND = np.uint64(1 + (10000 << 32))
_POW10 = np.array([10 ** k for k in range(UNIT_DIGITS + 1)], np.int64)


@njit(cache=True, nogil=True, inline="always")
def _digit_run(buf, i):
    """(count, value) of the decimal digits that start buf[i:i + 8] (count 8: there may be more). Eight bytes
    at once (SWAR): a byte is a digit iff neither its + 0x46 nor its - 0x30 sets its top bit; a borrow
    only reaches bytes after the first non-digit, which are not used."""
    word = _load8(buf, i)
    digits = word - _ASCII_ZEROS
    count = _trailing_zeros(((word + _ABOVE_NINE) | digits) & _TOP_BITS) >> np.uint64(3)
    if count == 0:
        return 0, 0
    digits = digits << (np.uint64(8) * (np.uint64(8) - count))  # the run as the low digits of 8
    digits = digits * np.uint64(10) + (digits >> np.uint64(8))
    digits = (((digits & _LOW_BYTES) * _MUL_HUNDRED_MILLION)
              + (((digits >> np.uint64(16)) & _LOW_BYTES) * _MUL_TEN_THOUSAND)) >> np.uint64(32)
    return np.int64(count), np.int64(digits)


@njit(cache=True, nogil=True, inline="always")
def _string_end(buf, i, end):
    """Index of the closing quote of the string whose first byte is at i; -1 if escaped, control or
    non-ASCII bytes (or the end) come first."""
    while i + 8 <= end:  # eight bytes at a time: the first byte that is a quote, backslash, control or not ASCII
        word = _load8(buf, i)
        quotes, backslashes = word ^ _QUOTES, word ^ _BACKSLASHES
        special = (((quotes - _ONES) & ~quotes) | ((backslashes - _ONES) & ~backslashes)
                   | ((word - _SPACES) & ~word) | word) & _TOP_BITS
        if special:
            i += np.int64(_trailing_zeros(special) >> np.uint64(3))
            return i if buf[i] == _QUOTE else -1
        i += 8
    while i < end:
        c = buf[i]
        if c == _QUOTE:
            return i
        if c == _BACKSLASH or c < 32 or c >= 128:
            return -1
        i += 1
    return -1


@njit(cache=True, nogil=True, inline="always")
def _digits(buf, i, end, value):
    """value extended by the decimal digits from i on: (value, index after them). Eight at a time while eight
    bytes of the frame remain, then byte by byte. Callers bound the digit count, so a wrap-around of a
    too-long run is refused before its value is used."""
    while i + 8 <= end:
        count, part = _digit_run(buf, i)
        value = value * _POW10[count] + part
        i += count
        if count < 8 or i == end or not _ZERO <= buf[i] <= _NINE:
            return value, i
    while i < end and _ZERO <= buf[i] <= _NINE:
        value = value * 10 + (buf[i] - _ZERO)
        i += 1
    return value, i


@njit(cache=True, nogil=True, inline="always")
def _int_end(buf, i, end, out, slot, row):
    """Parse a JSON integer of at most 18 digits at i into out[slot, row]; the index after it, or -1."""
    negative = False
    if i < end and buf[i] == _MINUS:
        negative = True
        i += 1
    start = i
    value, i = _digits(buf, i, end, 0)
    digits = i - start
    if digits == 0 or digits > 18 or (digits > 1 and buf[start] == _ZERO):
        return -1
    if i < end and (buf[i] == _DOT or buf[i] == 101 or buf[i] == 69):  # a fraction or exponent: not an int
        return -1
    out[slot, row] = -value if negative else value
    return i


@njit(cache=True, nogil=True, inline="always")
def _decimal(buf, i, end):
    """A decimal string's value in 1e-8 units and the index after its closing quote: (units, next),
    next -1 if it is not plain digits[.digits] within the limits."""
    if i >= end or buf[i] != _QUOTE:
        return 0, -1
    i += 1
    start = i
    units, i = _digits(buf, i, end, 0)
    whole = i - start
    if whole == 0 or whole > _MAX_WHOLE_DIGITS or (whole > 1 and buf[start] == _ZERO):
        return 0, -1
    fraction = 0
    if i < end and buf[i] == _DOT:
        i += 1
        fraction_start = i
        units, i = _digits(buf, i, end, units)
        fraction = i - fraction_start
        if fraction == 0 or fraction > UNIT_DIGITS:
            return 0, -1
    if i >= end or buf[i] != _QUOTE:
        return 0, -1
    return units * _POW10[UNIT_DIGITS - fraction], i + 1


@njit(cache=True, nogil=True, inline="always")
def _literal(buf, i, end, word):
    n = len(word)
    if i + n > end:
        return -1
    for k in range(n):
        if buf[i + k] != word[k]:
            return -1
    return i + n


_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)
_NULL = np.frombuffer(b"null", np.uint8)


@njit(cache=True, nogil=True)
def _event_start(buf, i, end):
    """The index of the event's first key in the frame buf[i:end] (after `{"stream":"<name>","data":{`), or
    -1 without that envelope (or with an empty event)."""
    if end - i < len(ENVELOPE) + len(_DATA) + 2:
        return -1
    for k in range(len(ENVELOPE)):
        if buf[i + k] != ENVELOPE[k]:
            return -1
    close = _string_end(buf, i + len(ENVELOPE), end)
    if close < 0 or close + len(_DATA) + 1 >= end:
        return -1
    i = close + 1
    for k in range(len(_DATA)):
        if buf[i + k] != _DATA[k]:
            return -1
    return i + len(_DATA)


@njit(cache=True, nogil=True)
def _skip_scalar(buf, i, end, scratch):
    """The index after an unknown field's scalar value (string, integer, true, false, null), or -1."""
    c = buf[i]
    if c == _QUOTE:
        close = _string_end(buf, i + 1, end)
        return -1 if close < 0 else close + 1
    if c == _MINUS or _ZERO <= c <= _NINE:
        return _int_end(buf, i, end, scratch, 0, 0)
    if c == 116:
        return _literal(buf, i, end, _TRUE)
    if c == 102:
        return _literal(buf, i, end, _FALSE)
    if c == 110:
        return _literal(buf, i, end, _NULL)
    return -1


@njit(cache=True, nogil=True)
def _levels(buf, i, end, row, side, lv_msg, lv_side, lv_price, lv_qty, n_levels):
    """Levels [["p","q"],...] at i appended to the level arrays; (index after, new level count) or -1."""
    if buf[i] != _LBRACKET:
        return -1, n_levels
    i += 1
    if i < end and buf[i] == _RBRACKET:
        return i + 1, n_levels
    while i < end:
        if buf[i] != _LBRACKET or n_levels >= len(lv_msg):
            return -1, n_levels
        price, i = _decimal(buf, i + 1, end)
        if i < 0 or i >= end or buf[i] != _COMMA:
            return -1, n_levels
        qty, i = _decimal(buf, i + 1, end)
        if i < 0 or i + 1 >= end or buf[i] != _RBRACKET:
            return -1, n_levels
        lv_msg[n_levels] = row
        lv_side[n_levels] = side
        lv_price[n_levels] = price
        lv_qty[n_levels] = qty
        n_levels += 1
        i += 1
        if buf[i] == _RBRACKET:
            return i + 1, n_levels
        if buf[i] != _COMMA:
            return -1, n_levels
        i += 1
    return -1, n_levels


@njit(cache=True, nogil=True)
def scan(buf, starts, ends, keys, kinds, required, event, event_optional, symbol,
         values, present, lv_msg, lv_side, lv_price, lv_qty):
    """Decode frames buf[starts[r]:ends[r]] into values[k, r] / present[k, r] (one row per key; a STR
    value is kept as its position, start << 32 | length) and, for depth, the level arrays.

    `keys`: (n_keys, 2) bytes of each field name (second byte 0 for one-letter names); `kinds`: its value
    kind; `required`: 1 where a frame must have it. Returns (index of the first frame it cannot read or
    OK, number of level rows)."""
    scratch = np.zeros((1, 1), np.int64)
    unknown = np.zeros((_MAX_UNKNOWN, 2), np.int64)
    n_keys = len(kinds)
    one_letter = np.full(256, -1, np.int64)  # the slot of each one-letter key, by its byte
    required_mask = 0
    for k in range(n_keys):
        if keys[k, 1] == 0:
            one_letter[keys[k, 0]] = k
        if required[k]:
            required_mask |= 1 << k
    n_levels = 0
    with_levels = _has_levels(kinds)
    n_frames = len(starts)
    for r in range(n_frames):
        ahead = r + PREFETCH_AHEAD
        if ahead < n_frames:
            for address in range(starts[ahead], min(ends[ahead], starts[ahead] + PREFETCH_BYTES), _CACHE_LINE):
                _prefetch(buf, address)
        i, end = starts[r], ends[r]
        i = _event_start(buf, i, end)
        if i < 0:
            return r, n_levels
        seen = 0  # bit k: key k read in this frame
        n_unknown = 0
        first_level = n_levels
        asks_seen = False
        if buf[i] == _RBRACE:
            return r, n_levels
        while True:
            # "key":
            if i >= end or buf[i] != _QUOTE:
                return r, n_levels
            key_end = _string_end(buf, i + 1, end)
            if key_end < 0 or key_end + 2 >= end or buf[key_end + 1] != _COLON:
                return r, n_levels
            length = key_end - i - 1
            slot = -1
            if length == 1:
                slot = one_letter[buf[i + 1]]
            elif length == 2:
                b0, b1 = buf[i + 1], buf[i + 2]
                for k in range(n_keys):
                    if keys[k, 0] == b0 and keys[k, 1] == b1:
                        slot = k
                        break
            value_start = key_end + 2
            if slot < 0:
                for u in range(n_unknown):
                    other, other_length = unknown[u, 0], unknown[u, 1]
                    if other_length == length:
                        same = True
                        for k in range(length):
                            if buf[other + k] != buf[i + 1 + k]:
                                same = False
                                break
                        if same:
                            return r, n_levels
                if n_unknown == _MAX_UNKNOWN:
                    return r, n_levels
                unknown[n_unknown, 0] = i + 1
                unknown[n_unknown, 1] = length
                n_unknown += 1
                i = _skip_scalar(buf, value_start, end, scratch)
            else:
                if seen & (1 << slot):
                    return r, n_levels
                seen |= 1 << slot
                kind = kinds[slot]
                i = value_start
                if kind == INT:
                    i = _int_end(buf, i, end, values, slot, r)
                elif kind == DEC:
                    units, i = _decimal(buf, i, end)
                    values[slot, r] = units
                elif kind == BOOL:
                    if buf[i] == 116:
                        values[slot, r] = 1
                        i = _literal(buf, i, end, _TRUE)
                    else:
                        values[slot, r] = 0
                        i = _literal(buf, i, end, _FALSE)
                elif kind == STR:
                    if buf[i] != _QUOTE:
                        return r, n_levels
                    close = _string_end(buf, i + 1, end)
                    if close < 0:
                        return r, n_levels
                    values[slot, r] = (i + 1) * 4294967296 + (close - i - 1)  # start << 32 | length
                    i = close + 1
                else:  # LEVELS: bids (b) must come before asks (a), as Binance sends them
                    side = 0 if keys[slot, 0] == 98 else 1
                    if side == 0 and asks_seen:
                        return r, n_levels
                    asks_seen = asks_seen or side == 1
                    i, n_levels = _levels(buf, i, end, r, side, lv_msg, lv_side, lv_price, lv_qty, n_levels)
            if i < 0 or i >= end:
                return r, n_levels
            if buf[i] == _COMMA:
                i += 1
                continue
            if buf[i] == _RBRACE:
                break
            return r, n_levels
        # the event object closed at i: the envelope must close right after it, and the frame end there
        if i + 2 != end or buf[i + 1] != _RBRACE:
            return r, n_levels
        for k in range(n_keys):
            present[k, r] = (seen >> k) & 1
        if seen & required_mask != required_mask:
            return r, n_levels
        if not _string_is(buf, values, present, r, EVENT_SLOT, event, event_optional):
            return r, n_levels
        if not _string_is(buf, values, present, r, SYMBOL_SLOT, symbol, False):
            return r, n_levels
        if n_levels == first_level and with_levels:
            if n_levels >= len(lv_msg):
                return r, n_levels
            lv_msg[n_levels] = r
            lv_side[n_levels] = 2  # the null row of a message without levels
            n_levels += 1
    return OK, n_levels


@njit(cache=True, nogil=True, inline="always")
def _has_levels(kinds):
    for kind in kinds:
        if kind == LEVELS:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _string_is(buf, values, present, r, slot, expected, optional):
    if not present[slot, r]:
        return optional
    packed = values[slot, r]
    start, length = packed >> 32, packed & 4294967295
    if length != len(expected):
        return False
    for k in range(length):
        if buf[start + k] != expected[k]:
            return False
    return True


@njit(cache=True, nogil=True)
def gather_strings(buf, packed, present):
    """Arrow string buffers (int32 offsets, bytes) of the STR values `packed` (start << 32 | length)."""
    n = len(packed)
    offsets = np.zeros(n + 1, np.int32)
    for r in range(n):
        offsets[r + 1] = offsets[r] + ((packed[r] & 4294967295) if present[r] else 0)
    data = np.empty(offsets[n], np.uint8)
    for r in range(n):
        if present[r]:
            start = packed[r] >> 32
            for k in range(offsets[r + 1] - offsets[r]):
                data[offsets[r] + k] = buf[start + k]
    return offsets, data


# depth_ids: the ids of a depth diff, in this order in its rows of `ids`
ID_E, ID_T, ID_U, ID_u, ID_pu = 0, 1, 2, 3, 4
_ID_KEYS = np.array([[69, 0], [84, 0], [85, 0], [117, 0], [112, 117]], np.uint8)  # E T U u pu
_DEPTH_UPDATE = np.frombuffer(b"depthUpdate", np.uint8)


@njit(cache=True, nogil=True)
def _skip_levels(buf, i, end):
    """The index after levels [["p","q"],...] at i (strings without escapes; values not read), or -1."""
    if i >= end or buf[i] != _LBRACKET:
        return -1
    i += 1
    if i < end and buf[i] == _RBRACKET:
        return i + 1
    while i + 1 < end and buf[i] == _LBRACKET and buf[i + 1] == _QUOTE:
        close = _string_end(buf, i + 2, end)
        if close < 0 or close + 2 >= end or buf[close + 1] != _COMMA or buf[close + 2] != _QUOTE:
            return -1
        close = _string_end(buf, close + 3, end)
        if close < 0 or close + 2 >= end or buf[close + 1] != _RBRACKET:
            return -1
        i = close + 2
        if buf[i] == _RBRACKET:
            return i + 1
        if buf[i] != _COMMA:
            return -1
        i += 1
    return -1


@njit(cache=True, nogil=True)
def _is_text(buf, i, end, expected, e_start, e_end):
    """The index after the string at i if it is expected[e_start:e_end], else -1."""
    if i >= end or buf[i] != _QUOTE:
        return -1
    close = _string_end(buf, i + 1, end)
    if close < 0 or close - i - 1 != e_end - e_start:
        return -1
    for k in range(e_end - e_start):
        if buf[i + 1 + k] != expected[e_start + k]:
            return -1
    return close + 1


@njit(cache=True, nogil=True)
def depth_ids(buf, starts, ends, frames, symbol_of, symbols, symbol_starts, symbol_ends, ids, present):
    """The ids the sync engine decides on, read from the depth diffs frames[j] (buf[starts[f]:ends[f]])
    without decoding their levels: E, T, U, u, pu into ids[j] (present[j] where the frame has them).

    A frame is read only in the compact layout `scan` reads, with event type depthUpdate, symbol
    symbols[symbol_starts[r]:symbol_ends[r]] for r = symbol_of[j], integer ids, and well-formed levels
    (their values are read at flush). Returns a bool per frame: False where it is not such a frame
    (then the full decode takes it)."""
    m = len(frames)
    ok = np.zeros(m, np.bool_)
    scratch = np.zeros((1, 1), np.int64)
    for j in range(m):
        f = frames[j]
        end = ends[f]
        i = _event_start(buf, starts[f], end)
        if i < 0:
            continue
        good = True
        for k in range(5):
            present[j, k] = False
        seen_e = seen_s = seen_b = seen_a = False
        r = symbol_of[j]
        while True:
            if i >= end or buf[i] != _QUOTE:
                good = False
                break
            key_end = _string_end(buf, i + 1, end)
            if key_end < 0 or key_end + 2 >= end or buf[key_end + 1] != _COLON:
                good = False
                break
            length = key_end - i - 1
            b0 = buf[i + 1]
            b1 = buf[i + 2] if length == 2 else 0
            i = key_end + 2
            slot = -1
            if length == 1 or length == 2:
                for k in range(5):
                    if _ID_KEYS[k, 0] == b0 and _ID_KEYS[k, 1] == b1:
                        slot = k
                        break
            if slot >= 0:
                if present[j, slot]:
                    good = False
                    break
                present[j, slot] = True
                i = _int_end(buf, i, end, ids, j, slot)
            elif length == 1 and b0 == 101:  # e
                if seen_e:
                    good = False
                    break
                seen_e = True
                i = _is_text(buf, i, end, _DEPTH_UPDATE, 0, len(_DEPTH_UPDATE))
            elif length == 1 and b0 == 115:  # s
                if seen_s:
                    good = False
                    break
                seen_s = True
                i = _is_text(buf, i, end, symbols, symbol_starts[r], symbol_ends[r])
            elif length == 1 and (b0 == 98 or b0 == 97):  # b, a: bids come before asks
                if (b0 == 98 and (seen_b or seen_a)) or (b0 == 97 and seen_a):
                    good = False
                    break
                seen_b = seen_b or b0 == 98
                seen_a = seen_a or b0 == 97
                i = _skip_levels(buf, i, end)
            else:
                i = _skip_scalar(buf, i, end, scratch)
            if i < 0 or i >= end:
                good = False
                break
            if buf[i] == _COMMA:
                i += 1
                continue
            if buf[i] == _RBRACE:
                break
            good = False
            break
        if not good or i + 2 != end or buf[i + 1] != _RBRACE:
            continue
        ok[j] = seen_e and seen_s and seen_b and seen_a and present[j, ID_E] and present[j, ID_U] \
            and present[j, ID_u]
    return ok
