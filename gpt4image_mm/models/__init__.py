from .classifier import TextAlignedClassifier
from .data_preprocessor import TextAlignedDataPreprocessor
from .loss import ContrastiveAlignLoss, retrieval_accuracy
from .neck import AlignmentNeck
from .teacher import TextEmbeddingTeacher

__all__ = ['AlignmentNeck', 'ContrastiveAlignLoss', 'TextAlignedClassifier',
           'TextAlignedDataPreprocessor', 'TextEmbeddingTeacher',
           'retrieval_accuracy']
