"""Market-data building blocks shared by the data-foundation nodes.

One implementation per concept: symbol normalisation (:mod:`.symbols`), quote checks
(:mod:`.quotes`), timeframe buckets and bar aggregation (:mod:`.timeframes`, :mod:`.bars`)
and the retrying HTTP client every REST-speaking collector uses (:mod:`.http`). Nothing
here talks to a transport or a store: nodes reach those through their context.
"""
