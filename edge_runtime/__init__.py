"""The device side of the chest X-ray screening toolkit: preprocessing, metrics and model metadata.

This package never imports TensorFlow or Keras: a Raspberry Pi installs it with LiteRT alone.
Heavy libraries (OpenCV, pydicom, backends) are imported inside the functions that need them.
"""
__version__ = "0.1.0"
