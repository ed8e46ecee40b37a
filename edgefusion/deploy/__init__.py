"""A graph on a device: attention tiled where the latency model says it pays, and the ``latency`` verb.

The one place where :mod:`edgefusion.tiling` and :mod:`edgefusion.latency` meet (neither imports the other): the
tiling planner is handed the latency model's public cost function.
"""
