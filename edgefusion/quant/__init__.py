"""Precisions, mixed-precision policies, layer discovery, streaming range collection and QDQ emission."""
