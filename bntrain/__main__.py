"""``python -m bntrain``: the same command line as the ``bntrain`` script."""

from .cli import main

if __name__ == "__main__":
    main()
