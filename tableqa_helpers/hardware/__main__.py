"""``python -m tableqa_helpers.hardware measure|compare ...``: the plans checked on a GPU."""
from .gpucheck import main

main()
