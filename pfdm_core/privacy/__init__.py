"""Privacy floor: the t0 mechanism and its accountants (`mechanism`), and DP-SGD diffusion (`dpsgd`)."""
