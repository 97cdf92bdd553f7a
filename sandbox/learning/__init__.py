"""Models, feature encoding, training and evaluation loops, metrics; shared by both sides."""
