"""The ``theseus`` command line (typer + rich). ``main.py`` builds the app; each noun has a
small module. The CLI talks to the cluster only through ``theseus.api.client.ServerClient``."""
