"""``python -m caffe_mining.gradcheck``: see caffe_mining.gradcheck.cli."""
import sys

from caffe_mining.gradcheck.cli import main

sys.exit(main())
