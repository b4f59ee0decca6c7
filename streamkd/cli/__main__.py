"""`python -m streamkd.cli`."""

from streamkd.cli import main

main()
