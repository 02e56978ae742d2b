"""Reconstruction (FDK, FBP, SIRT/CGLS), corrections, denoising, metrology and detectability."""
