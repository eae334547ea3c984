"""Image side: image encoders, safe image loading, Fashion-MNIST."""
