"""streamkd: knowledge distillation from non-streaming to streaming ASR encoders."""

from streamkd.cpu import use_fast_blas_path

# Before any matrix product of the process: MKL fixes its kernels at its first call.
use_fast_blas_path()

__version__ = "0.1.0"
