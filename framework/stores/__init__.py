"""Stores behind one small API; the topology picks which one a table lives in."""

from framework.stores.base import (
    KeyValueStore,
    Store,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    open_store,
)

__all__ = ["KeyValueStore", "Store", "StoreError", "StoreRejected", "StoreUnavailable", "open_store"]
