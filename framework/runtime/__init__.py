"""The generic runtime: topology → registry → contracts → nodes on transports and stores.

- :mod:`~framework.runtime.core`: the run (start, stop, the end of a bounded run, metrics);
- :mod:`~framework.runtime.assembly`: stores, tables, writers and each service's context;
- :mod:`~framework.runtime.host`: one service's node, its work and its supervision;
- :mod:`~framework.runtime.dispatch`: one message at a time per node on the wall clock;
- :mod:`~framework.runtime.simulation`: the driver of simulated time (demo, backtest);
- :mod:`~framework.runtime.consume`: Kafka inputs, committed once handled;
- :mod:`~framework.runtime.graph`: start and stop order;
- :mod:`~framework.runtime.state`: node snapshots across restarts.
"""

from framework.runtime.core import Runtime
from framework.runtime.graph import dependency_order, order_graph

__all__ = ["Runtime", "dependency_order", "order_graph"]
