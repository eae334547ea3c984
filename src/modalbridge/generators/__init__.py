"""Class-conditional image generators (BigGAN-deep) and ``load_generator``."""
