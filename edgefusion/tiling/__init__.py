"""Graph transforms for the NPU: attention (query-block) tiling and sub-graph partitioning."""
