"""ttcjax: JAX/Flax framework for studying test-time compute scaling."""

import setuptools

_CORE = [
    "jax>=0.4.35",
    "flax>=0.10",
    "optax>=0.2.3",
    "orbax-checkpoint>=0.6",
    "numpy>=1.26",
    "absl-py>=2.1",
]

_EXTRAS = {
    # Data pipeline and gin configs: only entry points and ttcjax/data import these.
    "data": [
        "gin-config>=0.5",
        "seqio>=0.0.19",
        "tensorflow-datasets>=4.9",
        "clu>=0.0.12",
        "tensorboard>=2.15",  # clu's TensorBoard writer needs it
        "matplotlib>=3.8",
    ],
    # Hugging Face import and parity tests. torch is pinned to the CPU build
    # that ships as a local wheel on the project's machines, so no CUDA build
    # (several GB) is downloaded.
    "hf": [
        "torch==2.13.0",
        "transformers>=4.45",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        "jinja2>=3.1",  # chat templates (ttcjax.models.hf_tokenizer)
    ],
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "chex>=0.1.87",
    ],
    # XManager pins protobuf<7; keep it in its own environment (see BUILD.md).
    "launch": [
        "xmanager>=0.6",
    ],
}

setuptools.setup(
    name="ttcjax",
    version="0.1.0",
    description="Scaling LLM test-time compute, in JAX.",
    packages=setuptools.find_packages(include=["ttcjax", "ttcjax.*"]),
    python_requires=">=3.10",
    install_requires=_CORE,
    extras_require=_EXTRAS,
)
