# Lets the tests import the project's package (``fpt``) as train_net.py does.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
