"""python -m container_payload --job PATH"""

import argparse
import sys

from container_payload.run import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m container_payload", description=__doc__)
    parser.add_argument("--job", required=True, help="path of job.json")
    # parse_known_args: pytorch_nndct reads and strips its own --nndct_* options from sys.argv.
    args, _ = parser.parse_known_args()
    sys.exit(main(args.job))
