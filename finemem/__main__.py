"""`python -m finemem ...` (and `accelerate launch -m finemem ...`): the `finemem` command."""

from finemem.cli import main

main()
