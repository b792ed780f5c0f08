"""NanoDet-Plus: the detector as a library."""

import os

# The largest image decoded (pixels); bigger ones are refused per image. OpenCV reads its own
# limit from the environment once, when it is loaded, and checks it against the header before
# allocating: set here, before any nanodet module imports cv2, a decompression bomb is refused
# without inflating it. (An explicit OPENCV_IO_MAX_IMAGE_PIXELS in the environment wins.)
MAX_IMAGE_PIXELS = 20000 * 20000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))
