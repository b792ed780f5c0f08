"""Training engine: a plain-PyTorch trainer for NanoDet-Plus (no Lightning)."""
