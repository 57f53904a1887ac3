"""Install script for asap, a PyTorch toolkit for fast image synthesis."""
from setuptools import find_packages, setup

setup(
    name="asap",
    version="0.1.0",
    description="Fast image synthesis: ASAPNet, SPADE, StyleGAN2 and efficient GANs in one toolkit",
    python_requires=">=3.10",
    packages=find_packages(include=["asap", "asap.*"]),
    include_package_data=True,
    install_requires=[
        # torch and torchvision are resolved together by pip (never pin torch alone).
        "torch>=2.4",
        "torchvision>=0.19",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "albumentations>=2.0.8",
        "lpips>=0.1.4",
        "tensorboard>=2.14",
        "numpy>=1.24",
        "pillow>=9.0",
        "scipy>=1.10",
        "tqdm>=4.60",
        "starlette>=0.37",   # tools/demo.py: the web app
        "uvicorn>=0.29",     # tools/demo.py: the server
        "pytorch-fid>=0.3",          # FID Inception-v3 and Frechet distance (asap/metrics/fid.py)
        "torchmetrics>=1.0",         # SSIM (asap/metrics/image.py); KID reference in the tests
    ],
    package_data={"asap.demo": ["static/*"]},
    extras_require={
        "dev": ["pytest>=7", "onnx>=1.15", "onnxruntime>=1.17", "playwright>=1.40", "torchprofile>=0.0.4"],
        "bench": ["torchprofile>=0.0.4"],  # the papers' MAC convention in tools/benchmark.py (optional)
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1"],
    },
)
