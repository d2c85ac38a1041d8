"""Reference model recipes (torch) and their training."""
