"""Convert an ultralytics YOLOv8 detection checkpoint (layers model.0-9) into an mmbackbones
YOLOv8CSPDarknet one. The .pt is read without running code from it (see
mmbackbones/converters/ultralytics_yolov8.py); --trust-pickle is only needed when that fails.

    python tools/model_converters/ultralytics_yolov8.py yolov8s.pt yolov8s_csp_darknet.pth
"""
import sys

from mmbackbones.converters import convert_ultralytics_yolov8
from mmbackbones.converters.cli import run_converter
from mmbackbones.converters.ultralytics_yolov8 import (add_ultralytics_arguments, load_for_cli,
                                                       yolov8_factory)

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='ultralytics YOLOv8',
                           convert=convert_ultralytics_yolov8, factory=yolov8_factory,
                           load=load_for_cli, add_arguments=add_ultralytics_arguments))
