"""Fine-tune Qwen2.5-VL on table images (Visual-TableQA) with a two-tier LoRA recipe."""
from .config import Config, ConfigError, get_config

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "get_config", "__version__"]
