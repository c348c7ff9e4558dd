"""Our PyTorch side of InstructBLIP: model code, checkpoint loading and the
exporter that writes model packages for the C++ server (model/PACKAGE.md)."""
