"""C{python -m claudews.client}: the same as C{claudews-client}."""

from claudews.client.cli import main

main()
