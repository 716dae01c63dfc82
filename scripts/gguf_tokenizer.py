"""Save the tokenizer (with its chat template) of a GGUF model as a transformers directory.

    python scripts/gguf_tokenizer.py SmolLM2-135M-Instruct.Q4_1.gguf tok/

Used by the demo and the example scripts: sftdata's render-template and tokenize take the
tokenizer directory; sfttrain reads the GGUF itself.
"""

import os
import sys

from transformers import AutoTokenizer

gguf, out = sys.argv[1], sys.argv[2]
AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf)).save_pretrained(out)
