"""streamkd: knowledge distillation from non-streaming to streaming ASR encoders."""

__version__ = "0.1.0"
