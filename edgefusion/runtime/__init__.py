"""onnxruntime execution of exported graphs: sessions and the text-to-image pipeline."""
