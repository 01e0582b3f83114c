"""Polygon REST historical aggregates: gap detection and backfill (batch)."""
