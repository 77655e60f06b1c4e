"""finemem: fine-tune language models and measure what they memorize while they learn."""

__version__ = "0.1.0"
