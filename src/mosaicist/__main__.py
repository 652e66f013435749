"""``python -m mosaicist``."""

from .cli import main

if __name__ == "__main__":
    main()
