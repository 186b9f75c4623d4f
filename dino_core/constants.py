"""Facts the packages agree on: file types, the normalisation of the DINO models, tensor names."""
from __future__ import annotations

# Image files every command reads (OpenCV decodes all of them; PIL too, in training).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Video containers that training samples frames from (through OpenCV/FFmpeg).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

# ImageNet statistics, RGB order: the normalisation of every official DINO and DINOv2 model.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Graph tensor names of every exported model.
INPUT_FLOAT = "images"        # float32 (B, 3, H, W), RGB, normalised
INPUT_BGR = "images_bgr"      # uint8 (B, H, W, 3), BGR, when exported with --preprocess
# Graph order; attn_registers (DINOv2 with registers): the [CLS] attention over the registers.
OUTPUT_NAMES = ("cls", "attn", "patch", "attn_registers")
