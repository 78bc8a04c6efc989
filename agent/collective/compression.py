"""Wire codecs: fp16 / bf16 on the wire, accumulation in fp32.

numpy has no bfloat16, so bf16 travels as ``uint16`` holding the top half of an IEEE fp32
(round to nearest even). Encoding and decoding are vectorised numpy; the *sum* is always done
in the accumulation dtype (fp32), never in fp16 (numpy's fp16 add is ~19x slower than fp32
and loses precision).
"""

from __future__ import annotations

import numpy as np

__all__ = ["WIRE_DTYPES", "decode_into", "encode_into", "wire_dtype_for"]

#: compression name -> numpy dtype that travels
WIRE_DTYPES = {"fp16": np.dtype(np.float16), "bf16": np.dtype(np.uint16)}
BF16 = "bf16"


def wire_dtype_for(compression: str | None, acc: np.dtype) -> np.dtype:
    if compression is None or acc.kind != "f":
        return acc
    if compression not in WIRE_DTYPES:
        raise ValueError(f"unknown compression {compression!r}; use 'fp16', 'bf16' or None")
    return WIRE_DTYPES[compression]


def encode_into(acc: np.ndarray, wire: np.ndarray) -> None:
    """wire[:] = acc rounded to the wire format."""
    if wire.dtype == acc.dtype:
        np.copyto(wire, acc)
    elif wire.dtype == np.uint16:  # bf16, round to nearest even; NaN stays NaN
        bits = acc.astype(np.float32, copy=False).view(np.uint32)
        rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
        nan = np.isnan(acc)
        np.right_shift(rounded, np.uint32(16), out=rounded)
        np.copyto(wire, rounded, casting="unsafe")
        if nan.any():
            wire[nan] = 0x7FC0
    else:
        np.copyto(wire, acc, casting="unsafe")


def decode_into(wire: np.ndarray, acc: np.ndarray, add: bool) -> None:
    """acc[:] (+)= wire converted to the accumulation dtype."""
    if wire.dtype == np.uint16 and acc.dtype.kind == "f":
        value = (wire.astype(np.uint32) << np.uint32(16)).view(np.float32)
    else:
        value = wire
    if add:
        np.add(acc, value, out=acc, casting="unsafe")
    else:
        np.copyto(acc, value, casting="unsafe")
