"""The command-line tools: ``python -m wsthread``, ``-m wsthread.echo``, ``.frames``, ``.wsgi``."""
