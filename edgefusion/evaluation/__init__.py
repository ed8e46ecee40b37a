"""Image-quality evaluation of exports: generation, metrics, sharding and the HTML report."""
