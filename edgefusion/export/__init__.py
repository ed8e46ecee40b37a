"""torch -> ONNX export, verification, manifest and the end-to-end export verb."""
