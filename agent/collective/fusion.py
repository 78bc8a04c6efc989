"""PURE tensor fusion: which tensors travel alone and which are packed into buckets.

The reference measurements (docs/design/collective.md) show that fusion follows the
transport's per-call latency: shared-memory MPI (a few us per call) is fastest per tensor and
up to 4.5x slower with one big fused buffer (pack + unpack are DRAM-bound), while a TCP ring
(~0.3 ms per call) wins ~1.8x by fusing. So a policy has two numbers:

* ``inplace_min_bytes``: a tensor at least this large that the backend can reduce where it
  lies is sent alone, without copies (like DDP's gradient-as-bucket-view);
* ``bucket_bytes``: smaller tensors are packed, in submission order and per dtype pair, into
  buckets of at most this many bytes.

``policy_for(latency_s, bandwidth_bytes_s)`` derives both from a backend's measured alpha and
beta: a tensor whose transfer time is below ``k`` times the call latency is worth fusing.

Example, policy (inplace_min=256 KiB, bucket=1 MiB), tensors [4 KiB a, 1 MiB b, 8 KiB c]
all float32: bucket 0 = packed [a, c] (12 KiB), bucket 1 = in place [b].
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Bucket", "BucketEntry", "FusionPolicy", "TensorSpec", "plan", "policy_for"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    count: int  # elements
    dtype: str  # dtype of the tensor as submitted (numpy dtype.str or "bfloat16")
    acc_dtype: str  # dtype the reduction accumulates in
    wire_dtype: str  # dtype on the wire (differs from acc_dtype when compressed)
    itemsize: int  # bytes per element of acc_dtype
    inplace_ok: bool  # the tensor is contiguous, of acc_dtype, and may be reduced where it lies

    @property
    def nbytes(self) -> int:
        return self.count * self.itemsize


@dataclass(frozen=True, slots=True)
class BucketEntry:
    tensor: int  # index into the submitted list
    offset: int  # element offset inside the bucket
    count: int


@dataclass(frozen=True, slots=True)
class Bucket:
    acc_dtype: str
    wire_dtype: str
    count: int
    inplace: bool
    entries: tuple[BucketEntry, ...]


@dataclass(frozen=True, slots=True)
class FusionPolicy:
    inplace_min_bytes: int
    bucket_bytes: int

    def __post_init__(self) -> None:
        if self.inplace_min_bytes < 0 or self.bucket_bytes < 1:
            raise ValueError("inplace_min_bytes must be >= 0 and bucket_bytes >= 1")


def policy_for(latency_s: float, bandwidth_bytes_s: float, k: float = 4.0) -> FusionPolicy:
    """Fuse tensors whose transfer takes less than ``k`` call latencies; buckets of 16x that."""
    crossover = int(k * latency_s * bandwidth_bytes_s)
    inplace_min = max(4096, crossover)
    return FusionPolicy(inplace_min_bytes=inplace_min, bucket_bytes=max(inplace_min, 16 * crossover))


def plan(specs: list[TensorSpec] | tuple[TensorSpec, ...], policy: FusionPolicy) -> list[Bucket]:
    """Buckets in a deterministic order (by first tensor), identical on every rank."""
    out: list[tuple[int, Bucket]] = []
    open_: dict[tuple[str, str], tuple[int, list[BucketEntry], int]] = {}  # key -> (first, entries, count)

    def close(key: tuple[str, str]) -> None:
        first, entries, count = open_.pop(key)
        alone = len(entries) == 1 and specs[entries[0].tensor].inplace_ok  # packing one tensor is pure cost
        out.append((first, Bucket(key[0], key[1], count, alone, tuple(entries))))

    for i, spec in enumerate(specs):
        if spec.count == 0:
            continue
        if spec.inplace_ok and spec.nbytes >= policy.inplace_min_bytes:
            out.append((i, Bucket(spec.acc_dtype, spec.wire_dtype, spec.count, True, (BucketEntry(i, 0, spec.count),))))
            continue
        key = (spec.acc_dtype, spec.wire_dtype)
        if key in open_ and (open_[key][2] + spec.count) * spec.itemsize > policy.bucket_bytes:
            close(key)
        if key not in open_:
            open_[key] = (i, [], 0)
        first, entries, count = open_[key]
        entries.append(BucketEntry(i, count, spec.count))
        open_[key] = (first, entries, count + spec.count)
    for key in list(open_):
        close(key)
    out.sort(key=lambda fb: fb[0])
    return [b for _, b in out]
