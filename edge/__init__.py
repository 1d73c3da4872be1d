"""ReefWatch edge runtime: frames in, fused and calibrated detections out.

Importing this package touches nothing but numpy: backends, meters and OpenCV
are imported by the modules that need them.
"""
from edge.detections import Detections
from edge.errors import EdgeError

__all__ = ["Detections", "EdgeError"]
__version__ = "0.1.0"
