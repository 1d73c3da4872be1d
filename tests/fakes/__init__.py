"""Stand-ins for hardware-only modules (tensorrt, pycuda) used by the tests."""
