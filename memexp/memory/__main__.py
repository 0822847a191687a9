"""`python -m memexp.memory <verb> ...`: the memory command line, memexp.memory_cli."""

from memexp.memory_cli import main

main()
