"""Graph transforms for the NPU: attention tiling (head groups x query blocks) and sub-graph partitioning. Never
imports :mod:`edgefusion.latency`: the tiling planner is given its cost function (see :mod:`edgefusion.deploy`)."""
