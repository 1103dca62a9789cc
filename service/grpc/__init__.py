"""The Open Inference Protocol v2 over gRPC: the KServe/Triton ``GRPCInferenceService``."""
