"""The Flower ServerApp: job lifecycle, governed rounds, aggregation, release gate."""
