#!/usr/bin/env python3
"""Prints the path of the ONNX Runtime shared library that ships inside the installed `onnxruntime` wheel
(onnxruntime/capi/libonnxruntime.so.<version>), for `--ort-lib` or ORT_DYLIB_PATH. Run it with the
interpreter of the environment that has the wheel (scripts/setup/python.sh prints it)."""
import glob
import os
import sys

import onnxruntime

capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
found = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so.*")))
if not found:
    sys.exit(f"ort_lib.py: no libonnxruntime.so.* in {capi}")
print(found[0])
