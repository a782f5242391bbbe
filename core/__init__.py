"""The library code the commands share, below the design card's files: feature files and lists
(features, lists), reading a checkpoint into its model (checkpoints), where a run's files go (runs),
thresholds and calibration (thresholds), plots, the torchrun ranks (distributed), and the ONNX and
OpenVINO export (onnx_export). None of it parses a command line."""
