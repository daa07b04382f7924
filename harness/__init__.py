"""The repo's harness: what the tests, ``make bench``, ``make demo`` and the config checks need
to find every project's entry. A project's ``train_net.py`` declares its entry (``TRAINER``,
``CONFIG_FNS``); the harness imports it and hands it to the tools. ``common`` never imports
the harness or a project: the dependency arrow points from the projects to ``common``."""
