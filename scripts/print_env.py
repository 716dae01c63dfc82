"""Print what a test run ran on: the CPU (model; AVX512-BF16 and AMX flags) and the versions of
the packages whose kernels and behaviour depend on it. Never fails: what is missing prints as such.

  python3 scripts/print_env.py [--cpu | --packages]    (both when no flag is given)
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "polars")
CPU_FLAGS = ("avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_lines() -> list[str]:
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError as e:
        return [f"cpu: unknown ({e.strerror})"]
    return [f"cpu: {model}"] + [
        f"  {flag}: {'yes' if flag in flags else 'no'}" for flag in CPU_FLAGS
    ]


def package_lines() -> list[str]:
    lines = []
    for name in PACKAGES:
        try:
            lines.append(f"{name}: {version(name)}")
        except PackageNotFoundError:
            lines.append(f"{name}: not installed")
    return lines


def main(argv: list[str]) -> int:
    lines = []
    if "--packages" not in argv:
        lines += cpu_lines()
    if "--cpu" not in argv:
        lines += [f"python: {sys.version.split()[0]} ({sys.executable})"] + package_lines()
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
