"""The kernel's two spellings of a CPU set: lists ("0-3,8") and hex masks.

sysfs writes most sets twice, as ``*_list`` ("0-3,8-11") and as a mask
("00000f0f" or, past 32 CPUs, comma-separated 32-bit words, most significant
first: "00000000,0000ffff"). Snapshots edited by hand sometimes update only
the mask, so discovery reads masks and uses lists only where no mask exists
(cgroup files, ``online``, ``possible``).
"""

from __future__ import annotations

from collections.abc import Iterable

# Linux's NR_CPUS tops out at 8192 today; anything far past it is garbage.
MAX_CPU = (1 << 16) - 1


def parse_cpulist(text: str) -> frozenset[int]:
    """Parse "0-3,8,10-11" or "" (stride forms like "0-15:2" are rejected).

    Raises ValueError on anything else, so callers can name the file.
    """
    text = text.strip().strip("\x00").strip()
    if not text:
        return frozenset()
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        a = int(lo)
        b = int(hi) if dash else a
        if a < 0 or b < a:
            raise ValueError(f"bad range {part!r}")
        if b > MAX_CPU:  # garbage like "0-4294967295" must not build a 4-billion-entry set
            raise ValueError(f"CPU {b} beyond {MAX_CPU}")
        out.update(range(a, b + 1))
    return frozenset(out)


def parse_cpumask(text: str) -> frozenset[int]:
    """Parse a sysfs hex mask ("ff,00000001"); raises ValueError if not hex."""
    text = text.strip().strip("\x00").strip().replace(",", "")
    if not text:
        return frozenset()
    value = int(text, 16)
    if value >> (MAX_CPU + 1):
        raise ValueError(f"mask wider than {MAX_CPU + 1} CPUs")
    out = []
    while value:  # one step per set bit, not per bit: masks are 256+ bits wide
        low = value & -value
        out.append(low.bit_length() - 1)
        value ^= low
    return frozenset(out)


def format_cpulist(cpus: Iterable[int]) -> str:
    """The inverse of :func:`parse_cpulist`: sorted, ranges collapsed."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def format_cpumask(cpus: Iterable[int]) -> str:
    """Format like the kernel: 32-bit hex words, most significant first."""
    value = 0
    for c in cpus:
        value |= 1 << c
    words = []
    while True:
        words.append(f"{value & 0xFFFFFFFF:08x}")
        value >>= 32
        if not value:
            break
    return ",".join(reversed(words))
