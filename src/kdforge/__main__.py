"""``python -m kdforge ...`` (and ``torchrun --nproc-per-node N -m kdforge train RECIPE``)."""

from kdforge.cli import main

main()
