"""Detection geometry and the region proposal network, one concept per file.

Plain NumPy outside the autograd tape (anchors, matching, sampling, box coding, proposal filtering),
except the RPN head and losses, which are :mod:`minirc.nn` modules and differentiable ops.
"""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    # anchors.py
    "AnchorGenerator": ".anchors",
    # matcher.py
    "Matcher": ".matcher",
    # sampler.py
    "BalancedPositiveNegativeSampler": ".sampler",
    # box_coder.py
    "BoxCoder": ".box_coder",
    # rpn.py
    "RPNHead": ".rpn",
    "RegionProposalNetwork": ".rpn",
    "concat_box_prediction_layers": ".rpn",
    "MultiScaleRoIAlign": ".poolers", "LevelMapper": ".poolers",
})
