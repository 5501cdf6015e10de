"""pfdm_core: private, personalized federated diffusion models (PFDM), the tested package
behind the pfdm notebooks. Floors (lower never imports higher): schedule -> nets, diffusion,
privacy, data -> train -> toy, plotting, cli. See DESIGN.md for the equations."""
from . import omp

# idle OpenMP threads sleep on busy cores and spin on idle ones (pfdm_core/omp.py, measured by
# benchmarks/bench_threads.py); decided before torch starts its thread pool
omp.apply()

from .diffusion import ddim_sample, ddpm_sample, diffusion_loss, sample
from .privacy import clip, epsilon, privatize, t0_for_epsilon
from .schedule import Schedule, q_sample, q_sample_from

__version__ = "0.1.0"
__all__ = ["Schedule", "q_sample", "q_sample_from", "diffusion_loss", "ddpm_sample", "ddim_sample",
           "sample", "clip", "privatize", "epsilon", "t0_for_epsilon"]
