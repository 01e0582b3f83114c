"""In-tree node plugins. Each sub-package has a light ``spec.py`` (the declaration the
registry reads) and a ``node.py`` (the implementation, imported only to run it)."""
