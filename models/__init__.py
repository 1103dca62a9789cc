"""Example models for hotswap and the code that trains them."""
