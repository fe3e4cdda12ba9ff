from .classifier import TextAlignedClassifier
from .data_preprocessor import TextAlignedDataPreprocessor
from .loss import ContrastiveAlignLoss, retrieval_accuracy
from .neck import AlignmentNeck

__all__ = ['AlignmentNeck', 'ContrastiveAlignLoss', 'TextAlignedClassifier',
           'TextAlignedDataPreprocessor', 'retrieval_accuracy']
