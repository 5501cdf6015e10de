"""Studies: one module per notebook that needs one. Nothing in the package imports them."""
