"""`python -m mdeploy.cli` runs the command line."""
from mdeploy.cli import main

main()
