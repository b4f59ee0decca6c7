"""`python -m streamkd.cli`."""

from streamkd.cli import main

if __name__ == "__main__":
    main()
