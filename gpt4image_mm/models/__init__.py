from gpt4image_mm.models.classifier import TextAlignedClassifier
from gpt4image_mm.models.data_preprocessor import TextAlignedDataPreprocessor
from gpt4image_mm.models.loss import ContrastiveAlignLoss, retrieval_accuracy
from gpt4image_mm.models.neck import AlignmentNeck
from gpt4image_mm.models.teacher import TextEmbeddingTeacher

__all__ = ['AlignmentNeck', 'ContrastiveAlignLoss', 'TextAlignedClassifier',
           'TextAlignedDataPreprocessor', 'TextEmbeddingTeacher',
           'retrieval_accuracy']
