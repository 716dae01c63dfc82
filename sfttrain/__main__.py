"""`python -m sfttrain ...` (also what `torchrun -m sfttrain run ...` launches)."""

from sfttrain.cli import cli

cli()
