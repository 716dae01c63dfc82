"""sfttrain: a compact QLoRA trainer over `sftdata pack` shards (run, plan, merge, generate).

Needs torch, transformers, peft, bitsandbytes, numpy and pyarrow; never Polars or Great
Expectations. See docs/sfttrain.md.
"""
