"""`python -m evarl ...` = the `evarl` command (what `accelerate launch -m evarl run ...` and torchrun call)."""

from evarl.cli import main

raise SystemExit(main())
