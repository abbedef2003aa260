"""tgiops: serve LLMs with Hugging Face TGI on EC2 GPU instances, planned from the hardware."""

__version__ = "0.1.0"
