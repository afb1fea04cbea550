"""``python -m theseus``: the CLI (``theseus.cli.main``); ``theseus up`` starts the server and
the agents this way, so they run with the same interpreter as the CLI."""

from theseus.cli.main import main

if __name__ == "__main__":
    main()
