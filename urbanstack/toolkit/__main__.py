import sys

from .service import launch

sys.exit(launch())
