"""Face detection (Haar, MTCNN), shared by predict, realtime, the GAN report and bench."""
