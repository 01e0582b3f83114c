"""Dukascopy historical ticks: the .bi5 codec, the downloader node, a local datafeed simulator and ``fxrun bi5``."""
