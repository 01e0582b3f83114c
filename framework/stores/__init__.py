"""Stores behind one small API; the topology picks which one a table lives in."""

from framework.stores.base import Store, StoreError, open_store

__all__ = ["Store", "StoreError", "open_store"]
