"""What every benchmark prints first: the CPU model, its matmul-relevant instruction sets and the
dtype the local backend picks on it (measured, as `models/local.py: choose_cpu_dtype` does),
because the same benchmark moves by 6x between an AMX machine and an AVX2 one."""

from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu() -> tuple[str, list[str]]:
    """(model name, the matmul-relevant flags it has) from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.machine()):
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return name, [f for f in FLAGS if f in flags]


def describe() -> str:
    from cai_engine.models.local import choose_cpu_dtype

    name, flags = cpu()
    dtype, reason = choose_cpu_dtype()
    return (
        f"cpu: {name}, {os.cpu_count()} cores; flags: {' '.join(flags) or 'none of ' + ', '.join(FLAGS)}\n"
        f"local dtype: {dtype} ({reason}); python {platform.python_version()}"
    )
