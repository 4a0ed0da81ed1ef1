"""Convert an mmyolo YOLOv8 checkpoint (its YOLOv8CSPDarknet backbone) into an mmbackbones
YOLOv8CSPDarknet one.

    python tools/model_converters/mmyolo_yolov8.py yolov8_s_syncbn_fast_8xb16-500e_coco.pth \
        yolov8s_csp_darknet_mmyolo.pth
"""
import sys

from mmbackbones.converters import convert_mmyolo_yolov8
from mmbackbones.converters.cli import run_converter
from mmbackbones.converters.ultralytics_yolov8 import yolov8_factory

if __name__ == '__main__':
    sys.exit(run_converter(None, description=__doc__, source='mmyolo YOLOv8',
                           convert=convert_mmyolo_yolov8, factory=yolov8_factory))
