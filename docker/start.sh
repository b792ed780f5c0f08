#!/usr/bin/env bash
# The platform runs the image with no command: CMD runs this script.
set -e
exec python3 /app/start.py "$@"
