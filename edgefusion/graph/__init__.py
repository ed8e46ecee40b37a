"""Graph analysis every graph consumer shares: tensor shapes and types, and the NPU's view of a graph."""
