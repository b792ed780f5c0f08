"""Pictures: detections drawn on images, charts drawn with OpenCV, and the pictures of an evaluation
(PR curves, confusion matrix, AP bars, fixed validation images)."""
