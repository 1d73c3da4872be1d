"""ReefWatch trainer: imagery in, a validated edge bundle out.

Heavy dependencies (torch, ultralytics) are imported by the modules that use them.
"""
__version__ = "0.1.0"
