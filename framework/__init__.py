"""fxflow framework: topology → registry → contracts → runtime → transports/stores.

This package is generic. It never imports ``nodes``; node plugins are found through the
``fxflow.nodes`` entry-point group (see :mod:`framework.registry`).
"""

__version__ = "0.1.0"
