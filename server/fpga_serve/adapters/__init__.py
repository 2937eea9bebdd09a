"""gRPC front ends: thin servicers that convert, call the data plane, convert back."""
