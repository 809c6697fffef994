"""Custom PyTensor Ops (convolution, pooling) with per-backend implementations."""
