"""What runs on the edge device. Importing this package must never import TensorFlow."""
