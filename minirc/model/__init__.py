"""Mask R-CNN: configuration, backbone, FPN, RoI heads and the detector (torchvision's layout and keys).

``MaskRCNN(tiny())`` builds a toy detector; ``MaskRCNN(torchvision_resnet50())`` torchvision's
``maskrcnn_resnet50_fpn``, ``MaskRCNN(torchvision_resnet50_v2())`` its ``maskrcnn_resnet50_fpn_v2``
(docs/torchvision_weights.md). See docs/model.md for the data flow and every config field.
"""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    # config.py
    "MaskRCNNConfig": ".config", "TransformConfig": ".config", "BackboneConfig": ".config",
    "FPNConfig": ".config", "AnchorConfig": ".config", "RPNConfig": ".config", "RoIHeadsConfig": ".config",
    "BoxHeadConfig": ".config", "MaskHeadConfig": ".config",
    "torchvision_resnet50": ".config", "torchvision_resnet50_v2": ".config", "tiny": ".config", "shapes_demo": ".config", "shapes_stride16": ".config",
    "shapes_stride32": ".config", "preset": ".config",
    "override": ".config",
    # the detector and its parts
    "MaskRCNN": ".mask_rcnn", "load_torchvision_state_dict": ".mask_rcnn",
    "from_torchvision_weights": ".torchvision_weights",
    "ResNet": ".backbone", "BackboneWithFPN": ".backbone",
    "FeaturePyramidNetwork": ".fpn", "LastLevelMaxPool": ".fpn",
    "GeneralizedRCNNTransform": ".transform", "ImageList": ".transform",
    "paste_masks_in_image": ".paste",
    "RoIHeads": ".roi_heads", "fastrcnn_loss": ".roi_heads", "postprocess_detections": ".roi_heads",
    "TwoMLPHead": ".box_head", "FastRCNNConvFCHead": ".box_head", "FastRCNNPredictor": ".box_head",
    "MaskRCNNHeads": ".mask_head", "MaskRCNNPredictor": ".mask_head",
    "project_masks_on_boxes": ".mask_head", "maskrcnn_loss": ".mask_head",
})
