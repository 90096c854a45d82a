"""The benchmark room: ``python -m tmexp.bench NAME``, one module per benchmark (never timed asserts in tests).

The figures they print on the project's reference machine are in the README's benchmark tables, with the commands.
"""
