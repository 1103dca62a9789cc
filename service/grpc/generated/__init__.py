"""The OIP v2 gRPC modules generated from grpc_predict_v2.proto (scripts/gen_grpc.py)."""
