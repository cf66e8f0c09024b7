"""fakeface: tell real face photos from GAN-generated ones."""

__version__ = "0.1.0"
