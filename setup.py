"""Installs keras_vae: calibrated-decoder variational autoencoders for Keras 3."""

from setuptools import find_packages, setup

setup(
    name="keras_vae",
    version="0.1.0",
    description="Variational autoencoders with calibrated decoders (sigma-VAE, BS-VAE) on Keras 3 and TFP.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["keras_vae", "keras_vae.*"]),
    package_data={"keras_vae": ["data/mnist/*.gz"]},
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.12",
        "tensorflow-probability[tf]==0.25.*",
        "tensorflow-datasets",
        "tensorboard",  # no longer installed by tensorflow 2.21; keras.callbacks.TensorBoard needs it
        "absl-py",
        "matplotlib",
        "pillow",  # PNG strips and GIFs of videos (keras_vae.video)
        "scikit-learn",  # mixture fits (keras_vae.samplers) and metric estimators (keras_vae.disentanglement)
        "scipy",
    ],
    extras_require={
        "dev": ["pytest", "pytest-xdist", "ruff"],
        "tflite": ["ai-edge-litert"],
    },
    entry_points={"console_scripts": ["keras-vae=keras_vae.__main__:run"]},
)
