"""The COCO category names, indexed by COCO category id: the class labels of torchvision's COCO models.

COCO 2017 ``instances_*.json`` numbers its 80 object categories with ids 1..90, leaving 10 ids unused
(12, 26, 29, 30, 45, 66, 68, 69, 71, 83: ids of the COCO paper's category list that were not annotated).
torchvision's detection models predict ``num_classes = 91`` labels and label ``k`` *is* category id
``k``: index 0 is the background, the unused ids are "N/A" (torchvision ``models/_meta.py``,
``_COCO_CATEGORIES``, the ``categories`` of ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta``).
So ``COCO_CATEGORY_NAMES[label]`` names a prediction of such a model, and a COCO results file
takes the label as its ``category_id`` unchanged.
"""

BACKGROUND = "__background__"
UNUSED = "N/A"  # a category id without a category

COCO_CATEGORY_NAMES = (
    BACKGROUND, "person", "bicycle", "car", "motorcycle",  # 0-4
    "airplane", "bus", "train", "truck", "boat",  # 5-9
    "traffic light", "fire hydrant", UNUSED, "stop sign", "parking meter",  # 10-14
    "bench", "bird", "cat", "dog", "horse",  # 15-19
    "sheep", "cow", "elephant", "bear", "zebra",  # 20-24
    "giraffe", UNUSED, "backpack", "umbrella", UNUSED,  # 25-29
    UNUSED, "handbag", "tie", "suitcase", "frisbee",  # 30-34
    "skis", "snowboard", "sports ball", "kite", "baseball bat",  # 35-39
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",  # 40-44
    UNUSED, "wine glass", "cup", "fork", "knife",  # 45-49
    "spoon", "bowl", "banana", "apple", "sandwich",  # 50-54
    "orange", "broccoli", "carrot", "hot dog", "pizza",  # 55-59
    "donut", "cake", "chair", "couch", "potted plant",  # 60-64
    "bed", UNUSED, "dining table", UNUSED, UNUSED,  # 65-69
    "toilet", UNUSED, "tv", "laptop", "mouse",  # 70-74
    "remote", "keyboard", "cell phone", "microwave", "oven",  # 75-79
    "toaster", "sink", "refrigerator", UNUSED, "book",  # 80-84
    "clock", "vase", "scissors", "teddy bear", "hair drier",  # 85-89
    "toothbrush",  # 90
)
