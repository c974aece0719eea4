"""Entry point for `pulumi up`/`preview`: all the work is in components.program."""

from components.program import main

main()
