"""The topology: one YAML document that declares the whole system."""

from framework.topology.model import (
    Binding,
    Instrument,
    RunConfig,
    Service,
    StoreConfig,
    Table,
    Topic,
    Topology,
)

__all__ = ["Binding", "Instrument", "RunConfig", "Service", "StoreConfig", "Table", "Topic", "Topology"]
