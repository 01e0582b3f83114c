"""Polygon/Massive forex WebSocket collector: live quotes to tick.v1, gap markers after reconnects."""
