"""Packaging for kdefect.

CPU machines get ``tensorflow-cpu`` (no CUDA downloads). GPU users install
with the ``gpu`` extra and ``KDEFECT_GPU=1`` so that the CUDA build replaces
the CPU one: ``KDEFECT_GPU=1 pip install -e ".[gpu]"``.
"""

import os
import platform

from setuptools import find_packages, setup

TF = ">=2.21,<2.22"
if os.environ.get("KDEFECT_GPU") == "1" or platform.system() == "Darwin":
    tensorflow = [f"tensorflow{TF}"]
else:
    tensorflow = [f"tensorflow-cpu{TF}"]

setup(
    name="kdefect",
    version="0.1.0",
    description="End-to-end two-stage surface-defect detection (SegDecNet, ICPR 2020) in Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["kdefect", "kdefect.*"]) + ["kdefect.configs", "kdefect_cli"],
    package_dir={"kdefect.configs": "configs", "kdefect_cli": "cli"},
    package_data={"kdefect.configs": ["*.yaml"], "kdefect.data": ["splits/*.json", "splits/*.json.gz", "splits/*.md"]},
    install_requires=tensorflow
    + [
        "keras>=3.12,<4",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.3",
        "click>=8.1",
        "PyYAML>=6.0",
        "Pillow>=10.0",
        "matplotlib>=3.7",
        "tensorboard>=2.21,<2.22",
        "tqdm>=4.60",
        "ai-edge-litert>=2.0",
    ],
    extras_require={
        "gpu": [f"tensorflow[and-cuda]{TF}"],
        "test": ["pytest>=8", "pytest-xdist>=3", "nbmake>=1.5", "nbclient>=0.8", "nbformat>=5.1", "ipykernel"],
    },
    entry_points={"console_scripts": ["kdefect = kdefect_cli.main:main"]},
)
