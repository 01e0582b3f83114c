"""External data: FRED series, commodity prices (from FRED) and the ForexFactory economic calendar."""
