"""The YMIR side: speaks the platform's protocol and drives the ``nanodet`` library."""
