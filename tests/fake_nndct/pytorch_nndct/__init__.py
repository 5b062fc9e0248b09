"""A stand-in for Vitis AI's proprietary pytorch_nndct, for tests only.

It follows the API and behaviour documented in DESIGN.md section 9, including the awkward parts that the
adapter must handle: `--nndct_*` options read and stripped from sys.argv at import, `[VAIQ_*]` log lines on
stderr, errors that only log (export_xmodel with a batch size other than 1), and an exit with status 0 when
test mode finds no quant_info.json. Test mode reloads quant_info.json and bias_corr.pth as nndct does and
refuses a file whose names or graph_md5 do not match its graph ("Node name mismatch", exit status 0). Its
arithmetic is the portable backend's (container_payload.backends.portable), which emulates nndct's, so the
hybrid quantizer's check against it passes as it should against the real one.

FAKE_NNDCT_FAIL=<step> makes it fail the way nndct does at that step (for tests): `export_quant_config`
(logs an error, writes nothing), `export_xmodel` (logs an error, writes nothing) or `test_outputs` (test mode's
outputs have their classes rolled, so they disagree with the portable backend's).
"""

import sys

OPTIONS = {}


def _strip_nndct_args() -> None:
    kept = []
    for arg in sys.argv:
        if arg.startswith("--nndct_"):
            key, _, value = arg[2:].partition("=")
            OPTIONS[key] = value
        else:
            kept.append(arg)
    sys.argv[:] = kept


_strip_nndct_args()
__version__ = "3.5.0+fake"
